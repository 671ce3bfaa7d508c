"""Names, input conventions and reference values of the Open Model Zoo models the toolkit converts."""

REIDENTIFICATION = "face-reidentification-retail-0095"
LANDMARKS = "landmarks-regression-retail-0009"
DETECTOR = "face-detection-retail-0004"
PRECISIONS = ("FP32", "FP16", "FP16-INT8")

# Input convention of all three OMZ models (their model cards): BGR colour order, pixel values
# 0..255 as float32, NCHW layout.
COLOR_ORDER = "BGR"
PIXEL_RANGE = "0..255"
LAYOUT = "NCHW"

# Five reference points of an aligned face (left eye, right eye, nose tip, left and right mouth
# corners) as (x, y) in [0, 1] image coordinates, from the face-reidentification-retail-0095 model card.
REFERENCE_LANDMARKS = (
    (0.31556875000000000, 0.4615741071428571),
    (0.68262291666666670, 0.4615741071428571),
    (0.50026249999999990, 0.6405053571428571),
    (0.34947187500000004, 0.8246919642857142),
    (0.65343645833333330, 0.8246919642857142),
)

REIDENTIFICATION_SIZE = 128
LANDMARKS_SIZE = 48
EMBEDDING_SIZE = 256

# The model card's similarity of crop 0 against crops 1..9 and 0 of the ten validation crops
# (plain resize to 128x128, BGR, 0..255, cosine similarity clipped to [0, 1]), to three decimals.
MODEL_CARD_SIMILARITY = (0.243, 0.029, 0.000, 0.000, 0.000, 0.047, 0.337, 0.181, 0.022, 1.000)
