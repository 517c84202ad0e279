"""Token ids and strings shared with LLaVA's data format; the transformers the comm_llava model needs."""

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200
DEFAULT_IMAGE_TOKEN = "<image>"

# comm_llava's config declares its LLM sub-config with transformers' SubConfigSpec, which 5.20.0 introduced;
# with an older transformers (LLaVA's 4.37 pin) the tower works, the comm_llava model classes do not
COMM_LLAVA_MIN_TRANSFORMERS = (5, 20)
