"""Every external file that the toolkit uses, with its public URL, size and checksum.

The OMZ entries copy `files:` of each model's `model.yml` in Open Model Zoo (URL, size in bytes,
SHA-384). The validation crops come from the PINTO model zoo with SHA-256 digests of the published
files. `convert.fetch` downloads or copies these files and checks them against this table.
"""

from __future__ import annotations

from dataclasses import dataclass

OMZ = "omz"
IMAGES = "images"

OMZ_STORAGE_URL = "https://storage.openvinotoolkit.org/repositories/open_model_zoo"
IMAGES_BASE_URL = (
    "https://raw.githubusercontent.com/PINTO0309/PINTO_model_zoo/main/432_face-reidentification-retail-0095"
)

OMZ_MODELS = (
    "face-reidentification-retail-0095",
    "landmarks-regression-retail-0009",
    "face-detection-retail-0004",
)
OMZ_PRECISIONS = ("FP32", "FP16", "FP16-INT8")


@dataclass(frozen=True)
class Asset:
    """One external file and the checksum that it must match.

    `relative_path` uses `/` separators and is relative to the root of its source's layout:
    `<model>/<precision>/<file>` for OMZ (the OMZ storage tree), `<file>` for the crops.
    `size` is in bytes, or None where the source publishes no size. `algorithm` is a
    `hashlib` name and `digest` the lowercase hex digest.
    """

    source: str
    relative_path: str
    url: str
    size: int | None
    algorithm: str
    digest: str

    @property
    def name(self) -> str:
        return self.relative_path.rsplit("/", 1)[-1]


def _omz_file(relative_path: str, size: int, sha384: str, release: str = "2023.0") -> Asset:
    url = f"{OMZ_STORAGE_URL}/{release}/models_bin/1/{relative_path}"
    return Asset(OMZ, relative_path, url, size, "sha384", sha384)


def _crop(name: str, sha256: str) -> Asset:
    return Asset(IMAGES, name, f"{IMAGES_BASE_URL}/{name}", None, "sha256", sha256)


# OMZ's model.yml for face-detection-retail-0004 points its FP16-INT8 files at the 2022.3
# release folder. All other files are in the 2023.0 folder.
ASSETS: tuple[Asset, ...] = (
    _omz_file(
        "face-reidentification-retail-0095/FP32/face-reidentification-retail-0095.xml",
        237585,
        "d5adadadf98f45459bf740b0d5cb425b029ef81133280d3b4f9d0ba0d565b8e21b834c3d030448b8926d849340a8ca7a",
    ),
    _omz_file(
        "face-reidentification-retail-0095/FP32/face-reidentification-retail-0095.bin",
        4427256,
        "953bb75f16d4e7faa0a19700871e6107726cb83e0e062215a841848335694a1e274c61efacab81b4d240d935fe30efda",
    ),
    _omz_file(
        "face-reidentification-retail-0095/FP16/face-reidentification-retail-0095.xml",
        350427,
        "689fb39e94bbd0d22cfeeb9292d0b91ac753424a7ee2c0555070e4038a00bfcaad473b47303012b9a393027dbad0dbce",
    ),
    _omz_file(
        "face-reidentification-retail-0095/FP16/face-reidentification-retail-0095.bin",
        2213628,
        "6d51703e854509dafdab9dfc6b932136d301d95be6d52c9c23b5a4f5de1ffec80e8d38b87e0e9556ad36f0dded1588ed",
    ),
    _omz_file(
        "face-reidentification-retail-0095/FP16-INT8/face-reidentification-retail-0095.xml",
        650833,
        "5ccd7b936e0926b18c0fe9f851644c08901bdc6bc1885c619c55ce7753d6a3e43d30063a71710e8be809e369329f63e8",
    ),
    _omz_file(
        "face-reidentification-retail-0095/FP16-INT8/face-reidentification-retail-0095.bin",
        1196364,
        "5b4dcdbb2916d26aeff45d97b6ed732ab67ae44912acf273016082bc84a9d6ba2e23d21c6934deb5f5f02e2a1c41a242",
    ),
    _omz_file(
        "landmarks-regression-retail-0009/FP32/landmarks-regression-retail-0009.xml",
        43654,
        "f551a3f78308205aee2b921b1127d6a085414bcdd2dbc525c19acf70e88aa84033dc3f97ec16cd363d4cba12a461983c",
    ),
    _omz_file(
        "landmarks-regression-retail-0009/FP32/landmarks-regression-retail-0009.bin",
        762464,
        "ea8afdd4f0eec7273b21bd55c439d3255dd476411175675646e75349241ff81e50bf8f30fbced3f9d683bdc32bfa3db2",
    ),
    _omz_file(
        "landmarks-regression-retail-0009/FP16/landmarks-regression-retail-0009.xml",
        66508,
        "393eda465df2a886f7edd932e2f1cd6930ae91f85708f91b4cd60e411acfb86e9de9e083907901208e9e8af639846572",
    ),
    _omz_file(
        "landmarks-regression-retail-0009/FP16/landmarks-regression-retail-0009.bin",
        381232,
        "0e6e830387f56783de313e0f7022b7808fd2e9e0b28b411a65608e2c1df0bcf939c65fb699fc51868df30232d6308515",
    ),
    _omz_file(
        "landmarks-regression-retail-0009/FP16-INT8/landmarks-regression-retail-0009.xml",
        99320,
        "3767804ed4d244e63048f8e44e6ba0fb82a71377568009fd30118aec088d815c11f3bbfd6c210916881b9815d79f5cc5",
    ),
    _omz_file(
        "landmarks-regression-retail-0009/FP16-INT8/landmarks-regression-retail-0009.bin",
        196964,
        "9ef7b38ced5de407631aaea3f6ec44b49560668b90f54b6663bd178d09c258e91dfd22056ffe2f5a6d67fee962d6e92c",
    ),
    _omz_file(
        "face-detection-retail-0004/FP32/face-detection-retail-0004.xml",
        105340,
        "1933e7a49baafaf809c4d4c89d6380f018cccdd3be9f96360bc5de3f3008412fbb262236e06fddb3ecdbb5a6a990d010",
    ),
    _omz_file(
        "face-detection-retail-0004/FP32/face-detection-retail-0004.bin",
        2352984,
        "a2b4fa6dc07a37fb70d3ff11c207e19c167d45b6db5392e7e759b924df8ce16dbcdb8edff682c38820cc2e54bf6fdabf",
    ),
    _omz_file(
        "face-detection-retail-0004/FP16/face-detection-retail-0004.xml",
        143827,
        "a7f8d1d41998503c4f3cdd8c12275f04f1736e5142127edcb4c76c3e17188499390574095a5b2a9dd78d3d0f77d02034",
    ),
    _omz_file(
        "face-detection-retail-0004/FP16/face-detection-retail-0004.bin",
        1176544,
        "394185d3e42c34d7f9d43229ec8f5755c07e19fd6469d23883e71707fdd8eb66d90cbd62248db90ff3ba1c94adac599b",
    ),
    _omz_file(
        "face-detection-retail-0004/FP16-INT8/face-detection-retail-0004.xml",
        228622,
        "97e3bb500ee35347869c4a064d5bcd505a6b9b56e23ac8c22d26fe8e657b4e1b847cdf72e9232a7dd5ec1e84d36c1f04",
        release="2022.3",
    ),
    _omz_file(
        "face-detection-retail-0004/FP16-INT8/face-detection-retail-0004.bin",
        600376,
        "2e381495f608515b07f41d39715515523da374ef8b6d9aa1177d9a55fdbf4bc52c0481885a6a671ac988b359a2bd146e",
        release="2022.3",
    ),
    # Validation crops: ten faces cut from one WIDER FACE validation photo.
    _crop(
        "12_Group_Group_12_Group_Group_12_10_0000.jpg",
        "53fdf6ee51b8271effdd26b1f14097fe4eb3848ac8a9b5c74880e0fa987aeda6",
    ),
    _crop(
        "12_Group_Group_12_Group_Group_12_10_0001.jpg",
        "81095a4f61e05710080585a9374fca4a086e7d4ce3f0766fb43228ff73b2a7d9",
    ),
    _crop(
        "12_Group_Group_12_Group_Group_12_10_0002.jpg",
        "e3b61625aa674b5e8b1a4ff2dc6875a595dbc8cd7607ce8c721ee32109b78582",
    ),
    _crop(
        "12_Group_Group_12_Group_Group_12_10_0003.jpg",
        "d805758f81a889dcd78d63e719060f91b97cb81fb0bd0d8de8d1e0a9516d61f8",
    ),
    _crop(
        "12_Group_Group_12_Group_Group_12_10_0004.jpg",
        "76a72220e910068b1fcb1cb0e64cad5c49b67513cfffae7c4ba1b456d773ed8c",
    ),
    _crop(
        "12_Group_Group_12_Group_Group_12_10_0005.jpg",
        "99d70bcb730df252b9c54b1358fe3fcb3a411981b7788daf82078aab2e07993d",
    ),
    _crop(
        "12_Group_Group_12_Group_Group_12_10_0006.jpg",
        "91cacc4d03575cbf88d95123e2b4350f95b9b1b063ba40e2036baa303ee964a0",
    ),
    _crop(
        "12_Group_Group_12_Group_Group_12_10_0007.jpg",
        "85d67e0bc04e5cbea17cdde984bf39f7b4fd0defb9a65957ccc0fd3492d64fa1",
    ),
    _crop(
        "12_Group_Group_12_Group_Group_12_10_0008.jpg",
        "78275e15a2f1759bccb4dba2d2a3d0087c128c9b1020b3ebbed1ad4a0b95edf2",
    ),
    _crop(
        "12_Group_Group_12_Group_Group_12_10_0009.jpg",
        "6943be015a67f6a7d925c6eca5b0f6e5377f3cf25fa244ba67a756fb441b7794",
    ),
)


def model_files(model: str, precision: str) -> tuple[Asset, ...]:
    """Return the OMZ files of one model and precision (`.xml` first), or () if there are none."""
    prefix = f"{model}/{precision}/"
    files = [asset for asset in ASSETS if asset.source == OMZ and asset.relative_path.startswith(prefix)]
    return tuple(sorted(files, key=lambda asset: not asset.name.endswith(".xml")))


def image_files() -> tuple[Asset, ...]:
    """Return the ten validation crops sorted by file name."""
    return tuple(sorted((asset for asset in ASSETS if asset.source == IMAGES), key=lambda asset: asset.name))
