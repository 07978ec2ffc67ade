// Fused ACDA atom convolution on CPU: one per-pixel pass over x (NHWC) applying the per-pixel
// atoms, immediately followed by the shared 1x1 (A) as a BLAS GEMM, band of rows by band of rows.
//
//   z[p, a, c] = sum_t D[p, a, t] * xpad[window_t(p), c]        (m x C per output pixel p)
//   y[o, p]    = sum_{a, c} W[o, a*C + c] * z[p, a, c]          (W = A permuted to (O, m*C))
//
// The atoms D = alpha . bases and the responses z exist one band of output pixels at a time, and
// backward recomputes them instead of saving them: only x and alpha are kept.
// Layouts: xpad (B, Hp, Wp, C), alpha (B, m, K, Ho, Wo), bases (K, k*k), W (O, m*C), y (B, O, Ho, Wo).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace {

// A band's responses z (pixels x m*C) fit in L2 and, with its gradient, cost little peak memory;
// the 1x1 GEMM wants >= 256 pixels.
constexpr int64_t kBandBytes = 1 << 20;
constexpr int64_t kMinBandPixels = 256;

template <typename T>
constexpr int64_t channel_block() { return 64 / sizeof(T); }  // two AVX2 registers

struct Geometry {
  int64_t channels, atoms, num_bases, ksize, stride, dilation, out_w, pad_w;
  int64_t taps() const { return ksize * ksize; }
  // Offset of tap (u, v) from a window's top-left corner in the NHWC padded input.
  int64_t tap_offset(int64_t u, int64_t v) const { return (u * pad_w + v) * dilation * channels; }
  int64_t window_offset(int64_t p) const { return ((p / out_w) * pad_w + p % out_w) * stride * channels; }
};

// One pixel's atoms (m, k*k).
template <typename T>
struct PixelAtoms {
  const T* d;
  int64_t taps;
  T operator()(int64_t a, int64_t t) const { return d[a * taps + t]; }
};

// z[a0:a0+AB, c0:c0+cb] for one pixel: AB x CB accumulators stay in registers over all taps.
template <typename T, int AB>
inline void apply_atoms_block(const T* xbase, PixelAtoms<T> atoms, const Geometry& g, int64_t a0, int64_t c0,
                              int64_t cb, T* z) {
  constexpr int64_t CB = channel_block<T>();
  T acc[AB][CB] = {};
  for (int64_t u = 0; u < g.ksize; ++u) {
    for (int64_t v = 0; v < g.ksize; ++v) {
      const T* xr = xbase + g.tap_offset(u, v) + c0;
      const int64_t t = u * g.ksize + v;
      if (cb == CB) {
        for (int aa = 0; aa < AB; ++aa) {
          const T d = atoms(a0 + aa, t);
#pragma omp simd
          for (int64_t cc = 0; cc < CB; ++cc) acc[aa][cc] += d * xr[cc];
        }
      } else {
        for (int aa = 0; aa < AB; ++aa) {
          const T d = atoms(a0 + aa, t);
          for (int64_t cc = 0; cc < cb; ++cc) acc[aa][cc] += d * xr[cc];
        }
      }
    }
  }
  for (int aa = 0; aa < AB; ++aa)
    for (int64_t cc = 0; cc < cb; ++cc) z[(a0 + aa) * g.channels + c0 + cc] = acc[aa][cc];
}

// grad_D[a0:a0+AB, t] = sum_c gz[a, c] * x[window_t, c] for one pixel and one tap.
template <typename T, int AB>
inline void atom_grad_block(const T* xr, const T* gz, const Geometry& g, int64_t a0, T* gd, int64_t atom_stride) {
  constexpr int64_t CB = channel_block<T>();
  T acc[AB][CB] = {};
  int64_t c0 = 0;
  for (; c0 + CB <= g.channels; c0 += CB) {
    for (int aa = 0; aa < AB; ++aa) {
      const T* gzr = gz + (a0 + aa) * g.channels + c0;
#pragma omp simd
      for (int64_t cc = 0; cc < CB; ++cc) acc[aa][cc] += gzr[cc] * xr[c0 + cc];
    }
  }
  for (int aa = 0; aa < AB; ++aa) {
    T sum = 0;
    for (int64_t c = c0; c < g.channels; ++c) sum += gz[(a0 + aa) * g.channels + c] * xr[c];
#pragma omp simd reduction(+ : sum)
    for (int64_t cc = 0; cc < CB; ++cc) sum += acc[aa][cc];
    gd[(a0 + aa) * atom_stride] = sum;
  }
}

// dL/dx[window_t, c0:c0+cb] += sum_a D[a0+a, t] gz[a0+a, c0:c0+cb] over the taps: gz held in registers.
template <typename T, int AB>
inline void scatter_block(PixelAtoms<T> atoms, const T* gzq, const Geometry& g, int64_t a0, int64_t c0, int64_t cb,
                          T* gxbase) {
  constexpr int64_t CB = channel_block<T>();
  T gzr[AB][CB] = {};
  for (int aa = 0; aa < AB; ++aa)
    for (int64_t cc = 0; cc < cb; ++cc) gzr[aa][cc] = gzq[(a0 + aa) * g.channels + c0 + cc];
  for (int64_t u = 0; u < g.ksize; ++u) {
    for (int64_t v = 0; v < g.ksize; ++v) {
      T* gxr = gxbase + g.tap_offset(u, v) + c0;
      const int64_t t = u * g.ksize + v;
      T acc[CB] = {};
      for (int aa = 0; aa < AB; ++aa) {
        const T d = atoms(a0 + aa, t);
#pragma omp simd
        for (int64_t cc = 0; cc < CB; ++cc) acc[cc] += d * gzr[aa][cc];
      }
      if (cb == CB) {
#pragma omp simd
        for (int64_t cc = 0; cc < CB; ++cc) gxr[cc] += acc[cc];
      } else {
        for (int64_t cc = 0; cc < cb; ++cc) gxr[cc] += acc[cc];
      }
    }
  }
}

constexpr int kAtomBlock = 6;

// Calls fn(std::integral_constant<int, AB>, a0) over atom blocks of kAtomBlock and one remainder block.
template <typename Fn>
inline void for_atom_blocks(int64_t atoms, Fn&& fn) {
  int64_t a0 = 0;
  for (; a0 + kAtomBlock <= atoms; a0 += kAtomBlock) fn(std::integral_constant<int, kAtomBlock>(), a0);
  switch (atoms - a0) {
    case 5: fn(std::integral_constant<int, 5>(), a0); break;
    case 4: fn(std::integral_constant<int, 4>(), a0); break;
    case 3: fn(std::integral_constant<int, 3>(), a0); break;
    case 2: fn(std::integral_constant<int, 2>(), a0); break;
    case 1: fn(std::integral_constant<int, 1>(), a0); break;
    default: break;
  }
}

// Per-pixel atoms of a band, (count, m, k*k): D[a, t] = sum_k alpha[a, k, p] bases[k, t].
template <typename T>
void form_band_atoms(const T* alpha_b, const T* bases, const Geometry& g, int64_t pixels, int64_t p0, int64_t count,
                     T* band_atoms) {
  const int64_t taps = g.taps();
  at::parallel_for(0, count, 16, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      T* d = band_atoms + q * g.atoms * taps;
      for (int64_t a = 0; a < g.atoms; ++a) {
        T* da = d + a * taps;
        std::fill(da, da + taps, T(0));
        for (int64_t k = 0; k < g.num_bases; ++k) {
          const T coefficient = alpha_b[(a * g.num_bases + k) * pixels + p0 + q];
          const T* basis = bases + k * taps;
#pragma omp simd
          for (int64_t t = 0; t < taps; ++t) da[t] += coefficient * basis[t];
        }
      }
    }
  });
}

// z (count x m*C) for output pixels [p0, p0 + count) of one image; band atoms (count, m, k*k).
template <typename T>
void band_atom_responses(const T* xb, const T* band_atoms, const Geometry& g, int64_t p0, int64_t count, T* z) {
  constexpr int64_t CB = channel_block<T>();
  const int64_t mc = g.atoms * g.channels, mt = g.atoms * g.taps();
  at::parallel_for(0, count, 8, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const T* xbase = xb + g.window_offset(p0 + q);
      const PixelAtoms<T> atoms{band_atoms + q * mt, g.taps()};
      for (int64_t c0 = 0; c0 < g.channels; c0 += CB) {
        const int64_t cb = std::min(CB, g.channels - c0);
        for_atom_blocks(g.atoms, [&](auto ab, int64_t a0) {
          apply_atoms_block<T, decltype(ab)::value>(xbase, atoms, g, a0, c0, cb, z + q * mc);
        });
      }
    }
  });
}

// dL/dalpha for a band via dL/dD (per pixel, so pixels run in parallel); written to grad_alpha_b (m, K, pixels).
template <typename T>
void alpha_grads_band(const T* xb, const T* gz, const T* bases, const Geometry& g, int64_t pixels, int64_t p0,
                      int64_t count, T* grad_alpha_b) {
  const int64_t mc = g.atoms * g.channels, taps = g.taps();
  at::parallel_for(0, count, 8, [&](int64_t begin, int64_t end) {
    std::vector<T> grad_atoms(g.atoms * taps);
    for (int64_t q = begin; q < end; ++q) {
      const T* xbase = xb + g.window_offset(p0 + q);
      for (int64_t u = 0; u < g.ksize; ++u) {
        for (int64_t v = 0; v < g.ksize; ++v) {
          T* gd = grad_atoms.data() + u * g.ksize + v;
          for_atom_blocks(g.atoms, [&](auto ab, int64_t a0) {
            atom_grad_block<T, decltype(ab)::value>(xbase + g.tap_offset(u, v), gz + q * mc, g, a0, gd, taps);
          });
        }
      }
      for (int64_t a = 0; a < g.atoms; ++a) {
        for (int64_t k = 0; k < g.num_bases; ++k) {
          const T* gda = grad_atoms.data() + a * taps;
          const T* basis = bases + k * taps;
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t t = 0; t < taps; ++t) sum += gda[t] * basis[t];
          grad_alpha_b[(a * g.num_bases + k) * pixels + p0 + q] = sum;
        }
      }
    }
  });
}

// dL/dx for a band: overlapping windows scatter into the same pixels, so threads split channels.
template <typename T>
void input_grads_band(const T* band_atoms, const T* gz, const Geometry& g, int64_t p0, int64_t count, T* gxb) {
  constexpr int64_t CB = channel_block<T>();
  const int64_t mc = g.atoms * g.channels, mt = g.atoms * g.taps();
  const int64_t blocks = (g.channels + CB - 1) / CB;
  at::parallel_for(0, blocks, 1, [&](int64_t block_begin, int64_t block_end) {
    for (int64_t q = 0; q < count; ++q) {
      T* gxbase = gxb + g.window_offset(p0 + q);
      const PixelAtoms<T> atoms{band_atoms + q * mt, g.taps()};
      for (int64_t c0 = block_begin * CB; c0 < std::min(block_end * CB, g.channels); c0 += CB) {
        const int64_t cb = std::min(CB, g.channels - c0);
        for_atom_blocks(g.atoms, [&](auto ab, int64_t a0) {
          scatter_block<T, decltype(ab)::value>(atoms, gz + q * mc, g, a0, c0, cb, gxbase);
        });
      }
    }
  });
}

Geometry make_geometry(const at::Tensor& xpad, const at::Tensor& alpha, const at::Tensor& bases, int64_t ksize,
                       int64_t stride, int64_t dilation) {
  TORCH_CHECK(xpad.dim() == 4 && alpha.dim() == 5 && bases.dim() == 2,
              "fused ACDA: xpad (B,Hp,Wp,C), alpha (B,m,K,Ho,Wo), bases (K,k*k)");
  TORCH_CHECK(bases.size(1) == ksize * ksize && bases.size(0) == alpha.size(2), "fused ACDA: bases must be (K, k*k)");
  return Geometry{xpad.size(3), alpha.size(1), alpha.size(2), ksize, stride, dilation, alpha.size(4), xpad.size(2)};
}

}  // namespace

int64_t band_pixels(const Geometry& g, int64_t pixels, size_t element_size) {
  const int64_t fit = kBandBytes / static_cast<int64_t>(g.atoms * g.channels * element_size);
  return std::max<int64_t>(1, std::min(pixels, std::max(kMinBandPixels, fit)));
}

at::Tensor fused_forward(const at::Tensor& xpad, const at::Tensor& alpha, const at::Tensor& bases,
                         const at::Tensor& weight, int64_t ksize, int64_t stride, int64_t dilation) {
  const Geometry g = make_geometry(xpad, alpha, bases, ksize, stride, dilation);
  const int64_t batch = xpad.size(0), out_h = alpha.size(3), pixels = out_h * g.out_w;
  const int64_t out_channels = weight.size(0), mc = g.atoms * g.channels;
  auto y = at::empty({batch, out_channels, out_h, g.out_w}, xpad.options());
  const int64_t band = band_pixels(g, pixels, xpad.element_size());
  auto z = at::empty({band, mc}, xpad.options());
  auto atoms = at::empty({band, g.atoms * g.taps()}, xpad.options());
  AT_DISPATCH_FLOATING_TYPES(xpad.scalar_type(), "acda_fused_forward", [&] {
    for (int64_t b = 0; b < batch; ++b) {
      const scalar_t* xb = xpad[b].data_ptr<scalar_t>();
      const scalar_t* alpha_b = alpha[b].data_ptr<scalar_t>();
      auto yb = y[b].view({out_channels, pixels});
      for (int64_t p0 = 0; p0 < pixels; p0 += band) {
        const int64_t count = std::min(band, pixels - p0);
        auto zb = z.narrow(0, 0, count);
        form_band_atoms<scalar_t>(alpha_b, bases.data_ptr<scalar_t>(), g, pixels, p0, count, atoms.data_ptr<scalar_t>());
        band_atom_responses<scalar_t>(xb, atoms.data_ptr<scalar_t>(), g, p0, count, zb.data_ptr<scalar_t>());
        auto out = yb.narrow(1, p0, count);
        at::mm_out(out, weight, zb.t());
      }
    }
  });
  return y;
}

std::vector<at::Tensor> fused_backward(const at::Tensor& grad_y, const at::Tensor& xpad, const at::Tensor& alpha,
                                       const at::Tensor& bases, const at::Tensor& weight, int64_t ksize,
                                       int64_t stride, int64_t dilation) {
  const Geometry g = make_geometry(xpad, alpha, bases, ksize, stride, dilation);
  const int64_t batch = xpad.size(0), out_h = alpha.size(3), pixels = out_h * g.out_w;
  const int64_t out_channels = weight.size(0), mc = g.atoms * g.channels;
  auto grad_xpad = at::zeros_like(xpad);
  auto grad_alpha = at::empty_like(alpha);
  auto grad_weight = at::zeros_like(weight);
  const int64_t band = band_pixels(g, pixels, xpad.element_size());
  auto z = at::empty({band, mc}, xpad.options());
  auto grad_z = at::empty({band, mc}, xpad.options());
  auto atoms = at::empty({band, g.atoms * g.taps()}, xpad.options());
  AT_DISPATCH_FLOATING_TYPES(xpad.scalar_type(), "acda_fused_backward", [&] {
    const scalar_t* basis = bases.data_ptr<scalar_t>();
    for (int64_t b = 0; b < batch; ++b) {
      const scalar_t* xb = xpad[b].data_ptr<scalar_t>();
      scalar_t* gxb = grad_xpad[b].data_ptr<scalar_t>();
      const scalar_t* alpha_b = alpha[b].data_ptr<scalar_t>();
      scalar_t* grad_alpha_b = grad_alpha[b].data_ptr<scalar_t>();
      auto gyb = grad_y[b].reshape({out_channels, pixels});
      for (int64_t p0 = 0; p0 < pixels; p0 += band) {
        const int64_t count = std::min(band, pixels - p0);
        auto zb = z.narrow(0, 0, count);
        auto gzb = grad_z.narrow(0, 0, count);
        form_band_atoms<scalar_t>(alpha_b, basis, g, pixels, p0, count, atoms.data_ptr<scalar_t>());
        band_atom_responses<scalar_t>(xb, atoms.data_ptr<scalar_t>(), g, p0, count, zb.data_ptr<scalar_t>());
        auto gy = gyb.narrow(1, p0, count);
        grad_weight.addmm_(gy, zb);
        at::mm_out(gzb, gy.t(), weight);
        const scalar_t* gz = gzb.data_ptr<scalar_t>();
        alpha_grads_band<scalar_t>(xb, gz, basis, g, pixels, p0, count, grad_alpha_b);
        input_grads_band<scalar_t>(atoms.data_ptr<scalar_t>(), gz, g, p0, count, gxb);
      }
    }
  });
  return {grad_xpad, grad_alpha, grad_weight};
}

// A plain op library (no pybind11, so it compiles in a fraction of the time): torch.ops.acda_fused_cpu.*
TORCH_LIBRARY(acda_fused_cpu, m) {
  m.def("forward(Tensor xpad, Tensor alpha, Tensor bases, Tensor weight, int ksize, int stride, int dilation)"
        " -> Tensor",
        &fused_forward);
  m.def("backward(Tensor grad_y, Tensor xpad, Tensor alpha, Tensor bases, Tensor weight, int ksize, int stride,"
        " int dilation) -> Tensor[]",
        &fused_backward);
}
