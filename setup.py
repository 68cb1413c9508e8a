# The C extension: the very same cpp/ sources that the llama.cpp patches compile into ggml.
from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup

setup(
    ext_modules=[
        Pybind11Extension(
            "tqgguf._core",
            ["cpp/tq_python.cpp", "cpp/tq.c", "cpp/tq_rotation.c", "cpp/tq_codebook.c"],
            include_dirs=["cpp"],
            cxx_std=17,
        )
    ],
)
