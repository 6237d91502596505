"""The official SVD-test images of the paper (tum-pbs/racecar, folder SVD-example): fetch, verify by sha256, load.

Run ``python -m racecar_repro.data.official all`` (or ``make data-mnist-official`` / ``make data-peak-official``)
once; the files keep their relative paths under ``<data_dir>/racecar-official`` (``MNIST/0.png``, ``peak/0/0.png``).
``--from`` (make: ``FROM=``) takes a local folder laid out like SVD-example, or another URL base.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from racecar_repro.data import ImageSet, MissingDataError
from racecar_repro.data import download
from racecar_repro.data.download import ChecksumError  # noqa: F401 (raised by fetch_official)
from racecar_repro.data.peak import load_peak_folder, read_png
from racecar_core.files import sha256_file
from racecar_repro.paths import data_dir

OFFICIAL_URL = "https://raw.githubusercontent.com/tum-pbs/racecar/master/SVD-example"
DIRNAME = "racecar-official"
DATASETS = ("mnist", "peak")
SUBDIR = {"mnist": "MNIST", "peak": "peak"}
N_PEAK = 55  # images per peak class: 0..49 train, 50..54 test
N_PEAK_TRAIN = 50
TIMEOUT_S = 10.0  # per request: small files; offline or unreachable fails fast instead of hanging
FILES: dict[str, list[str]] = {
    "mnist": [f"MNIST/{d}.png" for d in range(10)] + [f"MNIST/{d}_test.png" for d in range(10)],
    "peak": [f"peak/{c}/{i}.png" for c in (0, 1) for i in range(N_PEAK)],
}
# sha256 of each file of tum-pbs/racecar SVD-example (relative path -> hex digest).
SHA256: dict[str, str] = {
    "MNIST/0.png": "d7e589381b51c3aee74517724f3d8e40cec0b5c810567703736f5ddb7ea2ca3d",
    "MNIST/1.png": "33bf13128fd13c23190fa297e80abc6e5bc3e4c7bb291fa1fd31894aeea185ae",
    "MNIST/2.png": "84b67aac3ea60b6c8db82ad4f9b1a274a76cde6ebbdfdff4d4737245237e9696",
    "MNIST/3.png": "f4254a5b4064eff8593daf2b0824473c212681d7068acd09a8a23384138df4d5",
    "MNIST/4.png": "9c4ef669be5ea4172faca47eb7352f6da4dc750635a477bb4dec8c42b8e74a24",
    "MNIST/5.png": "0a3e6179730690269a6ad1262a1c0c696def8cf3d23ddd62020f752f523e3953",
    "MNIST/6.png": "de821203aac9ecd8f9c551ae1999dd08b206828dc2a432838faafeae346bb1b0",
    "MNIST/7.png": "4765a6a3323bab81763ab13ad5f0370ddc653ba00dc3f817f1e7f7a0ae8f2d9d",
    "MNIST/8.png": "241d04dcc2a6cf5f1c8610dc8877e0c4e22e42f2572f8e43716b74c75becfb86",
    "MNIST/9.png": "a573740fba4eeae1cae2bfd92dfc81bba8a0cbf28c4c6ded4de86b66aa9a032d",
    "MNIST/0_test.png": "24ae4056b797e805c6ad6fa04502664f6529f9f6c15f8fa4e674c23ee9cf94cb",
    "MNIST/1_test.png": "e38c4e0e2550518e083207a2f386fa777292b234921726407b752926582861eb",
    "MNIST/2_test.png": "81b2534e1b6dd318b52b0cdad87a88c3887e10d57616c43404213f4f80a83191",
    "MNIST/3_test.png": "df95407b6a86519a466150f6aa6e0b0f0a5a318cb871c3814225e5cb874b535c",
    "MNIST/4_test.png": "0d95e3eb12c55a84768e832f0bc3273a444b6b4aba5c02db66839ca8e64ea2f5",
    "MNIST/5_test.png": "f1fafdc3bd95fc62e4a45b3163733211e7bf09f526699530bd5c5e623482c6e7",
    "MNIST/6_test.png": "d623a10f5e0e39140e0c8abc1c6f16b4b60a9f35b5054252cbb17450ec3f7ef2",
    "MNIST/7_test.png": "fdc26b151f005a231d78eaa68a43daa566c3f51578879649dfe6e63824107a0c",
    "MNIST/8_test.png": "7a3ebcde76ad5448c94de71a06f5377e40bcacc933f1d216be40e8fdbd005bf7",
    "MNIST/9_test.png": "f6124535db9080cc271c87820ec32ee08a79cd133818304e1e05019b6e367f19",
    "peak/0/0.png": "6f5823043b936b1be61268bb4fa1dabaad518b28f5a726a1bcb28b80ef27c85b",
    "peak/0/1.png": "137dcacde2df6e82faf32f0381129b6b26424c3b521375223cc5221c1fbd6094",
    "peak/0/2.png": "9ee381975a61f6d12940ac394f674db57f9351d35b6190bf8b29cbd03642a822",
    "peak/0/3.png": "5ca286834fd2a7b53423a70b840759f5cae45f4fb7331da3c6a5c343fdfe2c35",
    "peak/0/4.png": "ed6215a68f60edc831d3a0e66cae43351b5374cfed2f13b6a50e4c99f15d0fca",
    "peak/0/5.png": "1b42599deac223523ec2e3aa0effb13c327c93859d460f465e65903de4227c04",
    "peak/0/6.png": "b6b3a752b423120ea4f73e9cd3145a388790197f1f0fa0f37540812b8c34ea81",
    "peak/0/7.png": "b59517967131e1a9d3ec6f93086745a067d380e7a1afe7f40c773918f16a1d61",
    "peak/0/8.png": "758ecf6f7c907b6a4c33c8dfb3c05813da94974e3f2babb9a196c8f2c3a8e06d",
    "peak/0/9.png": "828d4716f3da7454e3939cf4fbe0c4b9b7590dbdf16b53f2cce5ffb3136a5678",
    "peak/0/10.png": "47d8eb2f969ef460289dc8892edf19b420cfd68c7119e527cebe47ba833d4a3a",
    "peak/0/11.png": "1e18a7789acf147cefd9fcfd2d828c1f414774889702d32acaf798f3ebb64616",
    "peak/0/12.png": "f492cb5db59e2093aa187bde255dfeb1282e085e2ba1e06dfdeac46de25ce8be",
    "peak/0/13.png": "49b85dfa76333b99be62d76d17a7f2a6e5c0c0ae92b1a7921a0603fe2d306912",
    "peak/0/14.png": "029ee5458170e27f9071ccc22f7532fe6b24812afc9c2a36714962970f990aff",
    "peak/0/15.png": "c5f7bb64896a4e4f47ca01307a53985f30480c255b9f6f0a4a7ef029bf493b0f",
    "peak/0/16.png": "43a16182279882bc3d72590a0fe631d6580957a43e8ee19ee0c1c079fef39145",
    "peak/0/17.png": "351fe39d80c0863e9a524d136e801c04cf53f8000b703cc2360308a93babd97e",
    "peak/0/18.png": "bff34cbd5d97e9fb4c0ff6eb7f8c888979d3433d6e12b898d352c8eeef390426",
    "peak/0/19.png": "7f0561be46a5286196a7f308b5daa2965956c0c11058681a7501c75c47cb4e0b",
    "peak/0/20.png": "0d8126d8bc948ed03905bb0e1d710ded9564ce004acb4e746284d5519c23a5f3",
    "peak/0/21.png": "2fdc968ade02472cf4db5c795938c02ef3b29994aa3a9a49cbd1182e15b5ea1f",
    "peak/0/22.png": "cfc3e6e7cca0074679ff0141dd5a1bd30d0d03136183ad22e836a50bb7df7d52",
    "peak/0/23.png": "2437a1f4fc0a1cf26456c3b939e3f83bcb839485db88605d4ef2ab5ecbddbc9d",
    "peak/0/24.png": "376b422259f971617e6bb202099f9de03c41249641df92304a607423d373727e",
    "peak/0/25.png": "8652da819ac157f55d76d42db5781f6570d5c805bed6529355fbafc1a411f362",
    "peak/0/26.png": "f5293b9b23d9f2344919186f78127950ee473afbc064dd1cb4c3c5d0236481db",
    "peak/0/27.png": "b3d4042eaefbd1c69b57b3ec0bb26f2af8ce92aae3f2f27f3f4b3468d440a2c1",
    "peak/0/28.png": "d4bcf7e86a94193d3e97fe0aab07d1392569f6b680d4385c60ff88248c2bb240",
    "peak/0/29.png": "e55b3ab05b0748fafd3db1f1a233b1b4a8fe926af1558039e4dd212b1838569a",
    "peak/0/30.png": "7c02cf1e5758498736bf6f073e8e7d89511ca48dae736a7f5b256e36633520bf",
    "peak/0/31.png": "f4d44e1f57275453cf0fe6f30b95267443e04af1417db6039870ae8642f549bb",
    "peak/0/32.png": "6e052ed102b8d6423e371b118c98205faadf1032594981f2cad26598c381715a",
    "peak/0/33.png": "ac2a872024ce360567fd4f036ac50aa64d41baa345e272bad534ad46f93cdab7",
    "peak/0/34.png": "a2f1a27fa8d62f6c124e5859a1bfcf6501260abeb6f9a1ffcefca731b8c908d0",
    "peak/0/35.png": "db372cb2217f4369ca88b3137262a653cf0f1d2d50c826599538d64541482122",
    "peak/0/36.png": "3df5c3eb1c3fe087eed9a5c93a70597b58c6846c86845b937ba44daa3f454902",
    "peak/0/37.png": "f8a3b2370171649857c957d84d3e131bfed6f41a3e5986385d27c1f1e285bcfa",
    "peak/0/38.png": "61d489e4d87e6a7e1c7c398ebc1cb0171232f76661d24d0aebcc8093f33a49b1",
    "peak/0/39.png": "58bf9e2ed01a9949f07466b032e9ed86829b5cde518a39f7c6701ab19f696280",
    "peak/0/40.png": "c03de4d2fcc0a38096e8ee0d8d1de4459da643b6502334eda9bd6e43c1293711",
    "peak/0/41.png": "0645c1a6335750678cf84c52cbb8c030740abdbefcf83632c3d8aeb146870e3f",
    "peak/0/42.png": "88a2af11d3b4d350a33b368b6f15802a4bf118be428ddbbb41ef5d8de658a60e",
    "peak/0/43.png": "f8fd820b9fab0d9989e311cf3a3fc516f55cfc95c803564563294ab3b5cc9f5c",
    "peak/0/44.png": "5b6b6fdfa517b94fbb1a7dde02808626fd1b26eb4123c58364741570e3231074",
    "peak/0/45.png": "c510747a6aeac443bbbfae9d60b844daa890eab425f529a9831fe035ea8e3ce7",
    "peak/0/46.png": "afadb873b5b512a432f71500d780674c429309bf28cd6892f2c1c06e19045463",
    "peak/0/47.png": "42b636ed9c0d55b0320964eadeaf8192b7870ecee2800924b1fafe212d5de2eb",
    "peak/0/48.png": "f7ddf3228e35c2ebb787db403295506e51b74bdec2cb903252a6f6115277f5b0",
    "peak/0/49.png": "ec4a4657e972d91dd27866db36b04815fc140f776658a96be349beaf3079ab4c",
    "peak/0/50.png": "108d955ee1289b1b03e823a22e8c96e395510ecdfc2437a48315c3d06c1ca835",
    "peak/0/51.png": "4fc4e151abcdf3ac148123d923d45ff6a842e7f9f6cbdbfcd3556f74d8d916ed",
    "peak/0/52.png": "227d132f276493e92d8c3671ddfdcde4e63ef6220920739863998e604a4e3adb",
    "peak/0/53.png": "da9372068063fc21076064ff3c37cda5aa7811099c078b3ff68a5097adf7eecb",
    "peak/0/54.png": "09138175357f20ac278da28e550af4c19da729aabb4cb24705765115413b1804",
    "peak/1/0.png": "fd6f9f8576cef966dbb096942c804ef491a8e5a9815e018a43ccfbaa386ef607",
    "peak/1/1.png": "a797f5e8fa2ca070ac7881e8fa4d1e0599a217f8fcd82ec217b56a625689aad8",
    "peak/1/2.png": "6aa14d41fa0644d06025a9b0500c1af0f4599efc800bb9af297180fb5ed2d2ee",
    "peak/1/3.png": "88cfe2038af4a42365fc2f14309c6432dac1c374bc12b38541659f58143fa4d9",
    "peak/1/4.png": "29a96101fa0a0f1820e3c90f1caa8676657d530918f247234883a822d6d39e05",
    "peak/1/5.png": "2d360b579e618192eda2649bde05b1fb08e972a27792637a6b50dc287b6a0cc7",
    "peak/1/6.png": "723f5fbf49c751bdb418a02a210d869bc94465aaab411b4a817409f684319a28",
    "peak/1/7.png": "a6146fed043488792a3e2d77b2b719790cd5f042c9bb4b3da110b3cd4aa94010",
    "peak/1/8.png": "3d5b5629c22cac2972a3fb8843c82e9859b30ebb5343e28b876bf951eec7b468",
    "peak/1/9.png": "216a7d0e4926ebf5be92af1abc017de3e0b4651eef5f9b16f77e6af6c8e3b128",
    "peak/1/10.png": "96812607925faf8bcf733e7f0ad59dad8c3a0678ba36f6b5e1eefb94454268fe",
    "peak/1/11.png": "93f79d114413dd40d214c5c8cf3a2f04c5be0f4b2bf9a5e3b008f4ac4174b737",
    "peak/1/12.png": "31a4c729036a7a629debd0e9a39da6ee5bfb6fcadd7f43b37f568782893691b9",
    "peak/1/13.png": "29797d0e9504142d7d39b44610c3aa394abe16b6c2fb5ead114b7a3c526e341d",
    "peak/1/14.png": "833db2754f8b612fa16cbebc521cb9977b72207dab904beefdf724c07cadcca2",
    "peak/1/15.png": "5ca3bf13b03e79500f79f7b1a95db575590ec83c74dff3954d68d0925abded07",
    "peak/1/16.png": "d742b1240765ee498e0a84822750c316e6c4b9cb4523b34fc13d0bb3101bf4f8",
    "peak/1/17.png": "9e3cba34ee796517780af20294b6f7636714104b22fda2680d29529550110ab8",
    "peak/1/18.png": "f2f573a58ca3d5b6b0124e406374fed7bcb8259053c9dc091b72127f92653382",
    "peak/1/19.png": "0ec649ceb1544ea10f28dc237bbe85c3213938cd7fd6b87c1096d1c1f48b2b0c",
    "peak/1/20.png": "f433fc287a34c9542001d37f0fc3f95288368f537708dcf61029acf5d7d1625f",
    "peak/1/21.png": "682b0ee68762323392477dd151cbdaaf11be3efed2129418565ba595118f781b",
    "peak/1/22.png": "5fbb5cad2b5b2ae3a8dcb567fa350cf5a70f98a977c2649ef74745c3ce0f3dea",
    "peak/1/23.png": "876eb64617d661ba27fa26a61bc90a83324baf639f2c540c59d141dd8c386bd1",
    "peak/1/24.png": "fb0e78a50055cac92f55e135f7f5d01c71cf8ef8976a316921e385432816f4bd",
    "peak/1/25.png": "7470d1d60ff54d6f9fb566eeaf321fdad68f065e2efef3fc00467d66f4462d40",
    "peak/1/26.png": "fd2d506301b8dc433635622af8e2f95fbeb09ce1cdbf20c0ff5f8c4dcf8cfd16",
    "peak/1/27.png": "eb1eede564e39c46b0902f08146a90ae90b7f450b7688c9517c290a18be22eeb",
    "peak/1/28.png": "ec80df21c138eb09ce7109285ff6d52d2856a2cc05e29017d39ab5e69da47588",
    "peak/1/29.png": "a7c93ed4d0203ee877129e1d855f312c9dd5a4eff613f6c72fac6eeb75bd09b2",
    "peak/1/30.png": "023de95edff09f5738c1f426e9b371ff849e4c815ae49d3f4ff4bc999e1aa113",
    "peak/1/31.png": "1cee5b8d1c4989d9b3b51dc559fc4249337d645a6304c7f41220618285670389",
    "peak/1/32.png": "a170265abc28310613993083ea7ce7ba382c3a684cf941eeeefcb06e66410134",
    "peak/1/33.png": "81988e6b3c41ad78fd029b26865369d6df91bac519989276134dac7a8bc187d2",
    "peak/1/34.png": "b7a98225e231aa4978d864bb4ee3f2fdd34c725671c17031522aa0c37222bd48",
    "peak/1/35.png": "1e7aab6ae800aee9963f4c5334522891978496738357e0e51cab724692ec6e37",
    "peak/1/36.png": "8c668c6244fe4ea3d5139cfcddf5ba777897b28f81101978ab6eee56109cb13c",
    "peak/1/37.png": "e7e87118e446ddb0c738070d3133f1b485f234c9a6386b8eced98e081e2349d1",
    "peak/1/38.png": "a717c92503bc10a79dafb50ed5daf8955e41914dd0bb50d545c4c7a56456c1f4",
    "peak/1/39.png": "36e489ac1a2c86517a4a387ac19f7f3d74ed0cfc2425dfa1cac9634373205b36",
    "peak/1/40.png": "9b4dc89b47d2dc868c9aa1644bfe216cf52fc5827414e4dd2f5fbde68716a75d",
    "peak/1/41.png": "103823e6fb4f8df8ecadc3c486cfdd33a94ef2d33f56c1e34f86bd750949f32e",
    "peak/1/42.png": "798d31e5a340e5b5fef7efc33517cb0daa54f66843d2f608ac5f02825049afc2",
    "peak/1/43.png": "2eeacbd967378a4a242a1e237f9331040ac9e48e1897cc8e87c63b0242a86140",
    "peak/1/44.png": "9b37d53726356e29e94eb41b4ae660174c40d2670c919c7c4c5f6dc8b346d7c8",
    "peak/1/45.png": "1fc233ccf120a55728d0001f634dc2f34c19f014840136f9f3ddf85e28d68220",
    "peak/1/46.png": "bb5e4dab78e8e471ada561ffbe8d881d3d7328fc0b0ea8d4cb8e9fd8aa936ae7",
    "peak/1/47.png": "9a58dcad2eac51ac50e823b95d67fc8bdc280aa8ac5c5e459871ab6437347840",
    "peak/1/48.png": "278059daac7d48f77da16dc5d8f182a9df4ecd23da6e10eb21cd33c29060be52",
    "peak/1/49.png": "3e59f7cc4654f23ef338f7f181e98b965ffd249eba9079746b56a1bc152f1fbb",
    "peak/1/50.png": "2281c62cef8eb64d3bdf367af8bf59b6624dff94972080ef93d997a9248c2c2f",
    "peak/1/51.png": "48c574127ac8de4fe9fa958e327600d04195f9b95f0ab3c112d80dd8e1703aa2",
    "peak/1/52.png": "e6358a45ab7e1618320b50f137f20b10a071d4699023d996621ba6b2d31ce0ae",
    "peak/1/53.png": "80e170d92c0cf51b8da6a7b805a5352ac15d080b64c5f4b7148abd23664b34b1",
    "peak/1/54.png": "16a0757cd53759e395cfb237e2ea8a6bfdfef9a0c9e4407f9bf6b7270fff5ffc",
}


def _hint(dataset: str) -> str:
    return (f"`make data-{dataset}-official` (or: python -m racecar_repro.data.official {dataset}); "
            f"add FROM=<folder or URL> (--from) to copy from a local SVD-example folder or a mirror")


def official_root() -> Path:
    """Where the official files live: ``<data_dir>/racecar-official`` (relative paths kept below it)."""
    return data_dir() / DIRNAME


def _expected(rel: str, checksums: Mapping[str, str]) -> str:
    if rel not in checksums:
        raise KeyError(f"racecar: no sha256 for {rel} in the checksum table")
    return checksums[rel].lower()


def _bad_files(dataset: str, root: Path, checksums: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(missing, wrong checksum) relative paths of ``dataset`` under ``root``."""
    if dataset not in FILES:
        raise ValueError(f"racecar: unknown official data set {dataset!r}; choose one of {list(FILES)}")
    missing, wrong = [], []
    for rel in FILES[dataset]:
        path = root / rel
        if not path.is_file():
            missing.append(rel)
        elif sha256_file(path) != _expected(rel, checksums):
            wrong.append(rel)
    return missing, wrong


def has_official(dataset: str, root: str | Path | None = None, checksums: Mapping[str, str] = SHA256) -> bool:
    """True when every file of ``dataset`` ("mnist" or "peak") is under ``root`` with the right sha256."""
    root = Path(root) if root is not None else official_root()
    return not any(_bad_files(dataset, root, checksums))


def fetch_official(dataset: str, source: str | Path | None = None, root: str | Path | None = None,
                   checksums: Mapping[str, str] = SHA256) -> Path:
    """Copy or download each missing or wrong file of ``dataset`` into ``root``, verify its sha256; return root."""
    root = Path(root) if root is not None else official_root()
    source = OFFICIAL_URL if source is None else source
    missing, wrong = _bad_files(dataset, root, checksums)
    todo = sorted(set(missing + wrong), key=FILES[dataset].index)
    if todo and "://" not in str(source) and not Path(source).expanduser().is_dir():
        raise MissingDataError(f"racecar: source folder {source} does not exist; give a folder laid out like "
                               f"SVD-example (MNIST/0.png, peak/0/0.png, ...) or a URL base. "
                               f"Retry with {_hint(dataset)}")
    for rel in todo:
        try:
            download.fetch_verified(source, rel, root / rel, _expected(rel, checksums), _hint(dataset), TIMEOUT_S)
        except OSError as err:
            n_ok = len(FILES[dataset]) - len(todo) + todo.index(rel)
            raise MissingDataError(
                f"racecar: could not fetch the official {dataset} images from {source}: {err}; "
                f"{n_ok} of {len(FILES[dataset])} files are in {root / SUBDIR[dataset]}. "
                f"Retry with {_hint(dataset)}") from err
    return root


def _require(dataset: str, root: Path, checksums: Mapping[str, str]) -> None:
    missing, wrong = _bad_files(dataset, root, checksums)
    if missing or wrong:
        parts = [f"{len(x)} {what} ({', '.join(x[:5])}{', ...' if len(x) > 5 else ''})"
                 for what, x in (("missing", missing), ("with a wrong sha256", wrong)) if x]
        raise MissingDataError(f"racecar: the official {dataset} images in {root / SUBDIR[dataset]} are incomplete: "
                               f"{' and '.join(parts)} of {len(FILES[dataset])} files. Fetch them with "
                               f"{_hint(dataset)}")


def load_official_mnist(root: str | Path | None = None, checksums: Mapping[str, str] = SHA256) -> ImageSet:
    """The official SVD-test MNIST digits: one train (``d.png``) and one test (``d_test.png``) image per digit."""
    root = Path(root) if root is not None else official_root()
    _require("mnist", root, checksums)
    folder = root / SUBDIR["mnist"]
    x = {s: torch.from_numpy(np.stack([read_png(folder / f"{d}{s}.png") for d in range(10)])).float().unsqueeze(1)
         for s in ("", "_test")}
    y = torch.arange(10, dtype=torch.int64)
    return ImageSet(x[""], y, x["_test"], y.clone(), synthetic=False,
                    source=("official SVD-test MNIST images (tum-pbs/racecar SVD-example), checksums verified, "
                            f"from {folder}"))


def load_official_peak(root: str | Path | None = None, checksums: Mapping[str, str] = SHA256) -> ImageSet:
    """The official peak images (RGBA, channel 0): per class 0..49 train, 50..54 test."""
    root = Path(root) if root is not None else official_root()
    _require("peak", root, checksums)
    folder = root / SUBDIR["peak"]
    data = load_peak_folder(folder, n_train_per_class=N_PEAK_TRAIN)
    data.synthetic = False
    data.source = f"official peak images (tum-pbs/racecar SVD-example), checksums verified, from {folder}"
    return data


def check_available(dataset: str, root: str | Path | None = None) -> tuple[bool, str]:
    """Availability check for the registry: all official files present with the right sha256 (never downloads)."""
    root = Path(root) if root is not None else official_root()
    name = f"{dataset}_official"
    if has_official(dataset, root):
        return True, f"{name}: {len(FILES[dataset])} official files verified in {root / SUBDIR[dataset]}"
    return False, f"{name}: not (all) in {root / SUBDIR[dataset]}; run {_hint(dataset)}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: fetch and verify the official MNIST and/or peak images, and say what was done."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=[*DATASETS, "all"])
    ap.add_argument("--from", dest="source", default=None, help="URL base (http, https, file) or a local folder "
                    f"laid out like SVD-example (default {OFFICIAL_URL})")
    ap.add_argument("--root", default=None, help="where to put the files (default: <data_dir>/racecar-official)")
    args = ap.parse_args(argv)
    root = Path(args.root) if args.root else official_root()
    for dataset in DATASETS if args.dataset == "all" else (args.dataset,):
        n_bad = sum(map(len, _bad_files(dataset, root, SHA256)))
        try:
            fetch_official(dataset, args.source, root, checksums=SHA256)  # the table as it is now
        except (MissingDataError, ChecksumError) as err:
            print(err, file=sys.stderr)
            return 1
        n = len(FILES[dataset])
        print(f"official {dataset}: {n} files verified (sha256) in {root / SUBDIR[dataset]}; "
              f"{n_bad} fetched from {args.source or OFFICIAL_URL}, {n - n_bad} already present")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
