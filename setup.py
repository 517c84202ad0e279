"""comm-tower: COMM vision towers (multi-level CLIP + DINOv2 with MFM fusion) for LLaVA-style MLLMs."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

EXTRAS = {
    "train": ["deepspeed>=0.14", "peft>=0.10", "accelerate>=0.26"],
    "quant": ["bitsandbytes>=0.43"],
    "flash": ["flash-attn>=2.5"],
    "eval": ["matplotlib>=3.7"],
    "demo": [],  # the core is enough: the demo draws its loss plot with Pillow
    "web": ["gradio>=4"],
    "serve": ["fastapi>=0.110", "uvicorn>=0.29"],
    # not in "all": lmms-eval's full dependency set replaces torch / transformers pins
    "lmms": ["lmms-eval>=0.7"],
    # openai: the real client the comm-serve tests talk to the server with
    "dev": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "pycocoevalcap>=1.2", "openai>=1.40"],
}
EXTRAS["all"] = sorted(
    {req for name, reqs in EXTRAS.items() if name not in ("flash", "web", "lmms") for req in reqs}
)

setup(
    name="comm-tower",
    version="0.1.0",
    description="COMM vision towers (multi-level CLIP + DINOv2, MFM fusion) for LLaVA-style multimodal LLMs",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").is_file() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        *find_packages(include=["comm_tower", "comm_tower.*", "llava_patch", "llava_patch.*"]),
        "comm_tower.zoo.presets",
    ],
    package_dir={"comm_tower.zoo.presets": "zoo/presets"},
    package_data={"comm_tower.zoo.presets": ["*.json"]},
    install_requires=[
        "torch>=2.1",
        "transformers>=4.37,<6",
        "accelerate>=0.26",
        "safetensors>=0.4",
        "tokenizers>=0.15",
        "protobuf",  # transformers 5 needs it to convert sentencepiece-only tokenizers (Vicuna)
        "sentencepiece>=0.1.99",
        "einops>=0.7",
        "numpy",
        "pillow>=9",
        "tqdm>=4.60",
    ],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "comm-train=comm_tower.train.cli:main",
            "comm-chat=comm_tower.serve.cli:main",
            "comm-web=comm_tower.serve.gradio_app:main",
            "comm-serve=comm_tower.serve.openai_server:main",
            "comm-eval=comm_tower.eval.runner:main",
            "comm-demo=comm_tower.demo.__main__:main",
            "comm-bench=comm_tower.bench.__main__:main",
            "comm-presets=comm_tower.zoo.cli:main",
            "comm-layer-probe=comm_tower.eval.layer_probe:main",
            "comm-convert=comm_tower.hub.convert_cli:main",
            "comm-export=comm_tower.hub.export:main",
        ],
        "lmms_eval.models": ["comm = comm_tower.eval.lmms_plugin:manifest"],
    },
)
