// pybind11 bindings over the C core: the same tq.c / tq_rotation.c that ggml compiles.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "tq.h"

namespace py = pybind11;
using f32_array = py::array_t<float, py::array::c_style | py::array::forcecast>;

static tq_type parse_type(const std::string & name) {
    if (name == "tq2_5") return TQ_TYPE_TQ2_5;
    if (name == "tq3_5") return TQ_TYPE_TQ3_5;
    throw py::value_error("unknown TQ type '" + name + "'");
}

static tq_codebooks make_codebooks(tq_type t, const f32_array & hi, const f32_array & lo) {
    tq_codebooks cb;
    const py::ssize_t n_hi = py::ssize_t(1) << tq_hi_bits(t);
    const py::ssize_t n_lo = py::ssize_t(1) << tq_lo_bits(t);
    if (hi.ndim() != 1 || hi.size() != n_hi || lo.ndim() != 1 || lo.size() != n_lo) {
        throw py::value_error("codebook sizes do not match the type");
    }
    if (tq_codebook_init(&cb.hi, tq_hi_bits(t), hi.data()) || tq_codebook_init(&cb.lo, tq_lo_bits(t), lo.data())) {
        throw py::value_error("codebook is not finite and strictly increasing");
    }
    return cb;
}

static py::bytes quantize_row(const std::string & type, const f32_array & x, const f32_array & hi, const f32_array & lo) {
    const tq_type t = parse_type(type);
    if (x.ndim() != 1 || x.size() % TQ_BLOCK != 0) {
        throw py::value_error("row length must be a multiple of 64");
    }
    const tq_codebooks cb = make_codebooks(t, hi, lo);
    std::string out(size_t(x.size() / TQ_BLOCK) * tq_block_bytes(t), '\0');
    tq_quantize_row(t, x.data(), out.data(), x.size(), &cb);
    return py::bytes(out);
}

static py::array_t<float> dequantize_row(const std::string & type, const py::bytes & data, const f32_array & hi, const f32_array & lo) {
    const tq_type t = parse_type(type);
    const std::string s = data;
    if (s.size() % tq_block_bytes(t) != 0) {
        throw py::value_error("data is not a whole number of blocks");
    }
    const tq_codebooks cb = make_codebooks(t, hi, lo);
    const int64_t n = int64_t(s.size() / tq_block_bytes(t)) * TQ_BLOCK;
    py::array_t<float> y(n);
    tq_dequantize_row(t, s.data(), y.mutable_data(), n, &cb);
    return y;
}

static py::array_t<double> head_transform(int d, uint64_t layer_seed, int head,
                                          const py::array_t<int32_t, py::array::c_style | py::array::forcecast> & outliers) {
    if (d <= 0 || d % TQ_BLOCK != 0 || outliers.size() != d / TQ_BLOCK * TQ_HI) {
        throw py::value_error("bad head size or outlier count");
    }
    py::array_t<double> t({d, d});
    if (tq_head_transform(t.mutable_data(), d, layer_seed, head, outliers.data()) != 0) {
        throw py::value_error("outliers must be sorted, distinct and in range");
    }
    return t;
}

static py::array_t<float> codebook_scaled(int d, int bits) {
    py::array_t<float> out(py::ssize_t(1) << bits);
    if (tq_codebook_scaled(d, bits, out.mutable_data()) != 0) {
        throw py::value_error("codebook needs 3 <= d <= 4096 and 1 <= bits <= 8");
    }
    return out;
}

PYBIND11_MODULE(_core, m) {
    m.doc() = "tqgguf C core (cpp/tq.c, cpp/tq_rotation.c)";
    m.attr("BLOCK") = TQ_BLOCK;
    m.attr("HI") = TQ_HI;
    m.attr("LO") = TQ_LO;
    m.def("block_bytes", [](const std::string & type) { return tq_block_bytes(parse_type(type)); });
    m.def("quantize_row", &quantize_row, py::arg("type"), py::arg("x"), py::arg("hi"), py::arg("lo"));
    m.def("dequantize_row", &dequantize_row, py::arg("type"), py::arg("data"), py::arg("hi"), py::arg("lo"));
    m.def("head_transform", &head_transform, py::arg("d"), py::arg("layer_seed"), py::arg("head"), py::arg("outliers"));
    m.def("codebook_scaled", &codebook_scaled, py::arg("d"), py::arg("bits"));
    m.def("subseed", &tq_subseed);
    m.def("fp32_to_fp16", &tq_fp32_to_fp16);
    m.def("fp16_to_fp32", &tq_fp16_to_fp32);
}
