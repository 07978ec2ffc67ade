// Fused ACDA atom convolution on CPU: one per-pixel pass over x (NHWC) applying the per-pixel
// atoms, immediately followed by the shared 1x1 (A) as a GEMM, one band of output rows at a time.
//
//   z[p, a, c] = sum_t D[p, a, t] * xpad[window_t(p), c]        (m x C per output pixel p)
//   y[o, p]    = sum_{a, c} W[o, a*C + c] * z[p, a, c]          (W = A permuted to (O, m*C))
//
// Each thread owns one band at a time: it forms the band's atoms D = alpha . bases, its responses
// z, and multiplies them by W with a single-threaded GEMM (ATen's, i.e. MKL/oneDNN), so the only
// full-size tensors are x, alpha and y, and a call has a single parallel region (no per-phase
// barriers, which stall badly on a loaded machine). Backward recomputes z instead of saving it.
// Grouped ACDA (A (O, C/g, m)) changes only the 1x1: see Mixing.
//
// The channel dim is padded to a multiple of the register block (zeros in x and W), so every
// inner loop is a full block of vectors the compiler keeps in registers; ACDA_VECTOR_BYTES is the
// build's vector width (fused.py builds one binary per ISA: 64 for AVX-512, 32 for AVX2).
// Layouts: xpad (B, Hp, Wp, Cp), alpha (B, m, K, Ho, Wo), bases (K, k*k), W (O, m*Cp), y (B, O, Ho, Wo).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#ifndef ACDA_VECTOR_BYTES
#define ACDA_VECTOR_BYTES 16
#endif

namespace {

// A band's responses z (pixels x m*C) stay in L2; the GEMM wants >= 256 pixels.
constexpr int64_t kBandBytes = 1 << 20;
constexpr int64_t kMinBandPixels = 256;

// Two vectors of channels: with 6 atoms, 12 accumulators plus the loaded inputs fit the register file.
template <typename T>
constexpr int64_t channel_block() { return 2 * ACDA_VECTOR_BYTES / sizeof(T); }

int64_t padded_channels(int64_t channels, int64_t block) { return (channels + block - 1) / block * block; }

struct Geometry {
  int64_t channels, atoms, num_bases, ksize, stride, dilation, out_h, out_w, pad_w, band_rows;
  int64_t taps() const { return ksize * ksize; }
  int64_t pixels() const { return out_h * out_w; }
  int64_t bands() const { return (out_h + band_rows - 1) / band_rows; }
  // Offset of tap (u, v) from a window's top-left corner in the NHWC padded input.
  int64_t tap_offset(int64_t u, int64_t v) const { return (u * pad_w + v) * dilation * channels; }
  int64_t window_offset(int64_t p) const { return ((p / out_w) * pad_w + p % out_w) * stride * channels; }
};

// z[a0:a0+AB, :] for one pixel: AB x CB accumulators stay in registers over all taps.
template <typename T, int AB>
inline void apply_atoms_block(const T* xbase, const T* d, const Geometry& g, int64_t a0, T* z) {
  constexpr int64_t CB = channel_block<T>();
  const int64_t taps = g.taps();
  for (int64_t c0 = 0; c0 < g.channels; c0 += CB) {
    T acc[AB][CB] = {};
    for (int64_t u = 0; u < g.ksize; ++u) {
      for (int64_t v = 0; v < g.ksize; ++v) {
        const T* xr = xbase + g.tap_offset(u, v) + c0;
        const int64_t t = u * g.ksize + v;
        for (int aa = 0; aa < AB; ++aa) {
          const T dt = d[(a0 + aa) * taps + t];
#pragma omp simd
          for (int64_t cc = 0; cc < CB; ++cc) acc[aa][cc] += dt * xr[cc];
        }
      }
    }
    for (int aa = 0; aa < AB; ++aa) {
      T* zr = z + (a0 + aa) * g.channels + c0;
#pragma omp simd
      for (int64_t cc = 0; cc < CB; ++cc) zr[cc] = acc[aa][cc];
    }
  }
}

// grad_D[a0:a0+AB, t] = sum_c gz[a, c] * x[window_t, c] for one pixel and one tap.
template <typename T, int AB>
inline void atom_grad_block(const T* xr, const T* gz, const Geometry& g, int64_t a0, T* gd, int64_t atom_stride) {
  constexpr int64_t CB = channel_block<T>();
  T acc[AB][CB] = {};
  for (int64_t c0 = 0; c0 < g.channels; c0 += CB) {
    for (int aa = 0; aa < AB; ++aa) {
      const T* gzr = gz + (a0 + aa) * g.channels + c0;
#pragma omp simd
      for (int64_t cc = 0; cc < CB; ++cc) acc[aa][cc] += gzr[cc] * xr[c0 + cc];
    }
  }
  for (int aa = 0; aa < AB; ++aa) {
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t cc = 0; cc < CB; ++cc) sum += acc[aa][cc];
    gd[(a0 + aa) * atom_stride] = sum;
  }
}

// dL/dx[window_t, :] += sum_a D[a0+a, t] gz[a0+a, :] over the taps, gz held in registers.
template <typename T, int AB>
inline void scatter_block(const T* d, const T* gzq, const Geometry& g, int64_t a0, T* gxbase) {
  constexpr int64_t CB = channel_block<T>();
  const int64_t taps = g.taps();
  for (int64_t c0 = 0; c0 < g.channels; c0 += CB) {
    T gzr[AB][CB];
    for (int aa = 0; aa < AB; ++aa)
#pragma omp simd
      for (int64_t cc = 0; cc < CB; ++cc) gzr[aa][cc] = gzq[(a0 + aa) * g.channels + c0 + cc];
    for (int64_t u = 0; u < g.ksize; ++u) {
      for (int64_t v = 0; v < g.ksize; ++v) {
        T* gxr = gxbase + g.tap_offset(u, v) + c0;
        const int64_t t = u * g.ksize + v;
        T acc[CB] = {};
        for (int aa = 0; aa < AB; ++aa) {
          const T dt = d[(a0 + aa) * taps + t];
#pragma omp simd
          for (int64_t cc = 0; cc < CB; ++cc) acc[cc] += dt * gzr[aa][cc];
        }
#pragma omp simd
        for (int64_t cc = 0; cc < CB; ++cc) gxr[cc] += acc[cc];
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

// One band of one image: output pixels [p0, p0 + count), and the thread's scratch for it.
template <typename T>
struct Band {
  const Geometry& g;
  const T* xb;       // this image's padded input
  const T* alpha_b;  // this image's alpha (m, K, pixels)
  const T* bases;
  int64_t p0, count;
  T* atoms;  // (count, m, k*k)
  T* z;      // (count, m*Cp)

  // D[q, a, t] = sum_k alpha[a, k, p0+q] bases[k, t].
  void form_atoms() const {
    const int64_t taps = g.taps(), pixels = g.pixels();
    for (int64_t q = 0; q < count; ++q) {
      for (int64_t a = 0; a < g.atoms; ++a) {
        T* da = atoms + (q * g.atoms + a) * taps;
        std::fill(da, da + taps, T(0));
        for (int64_t k = 0; k < g.num_bases; ++k) {
          const T coefficient = alpha_b[(a * g.num_bases + k) * pixels + p0 + q];
          const T* basis = bases + k * taps;
#pragma omp simd
          for (int64_t t = 0; t < taps; ++t) da[t] += coefficient * basis[t];
        }
      }
    }
  }

  void responses() const {
    const int64_t mc = g.atoms * g.channels, mt = g.atoms * g.taps();
    for (int64_t q = 0; q < count; ++q) {
      const T* xbase = xb + g.window_offset(p0 + q);
      for_atom_blocks(g.atoms, [&](auto ab, int64_t a0) {
        apply_atoms_block<T, decltype(ab)::value>(xbase, atoms + q * mt, g, a0, z + q * mc);
      });
    }
  }

  // dL/dalpha through dL/dD, written to grad_alpha_b (m, K, pixels).
  void alpha_grads(const T* gz, T* grad_atoms, T* grad_alpha_b) const {
    const int64_t mc = g.atoms * g.channels, taps = g.taps(), pixels = g.pixels();
    for (int64_t q = 0; q < count; ++q) {
      const T* xbase = xb + g.window_offset(p0 + q);
      for (int64_t u = 0; u < g.ksize; ++u) {
        for (int64_t v = 0; v < g.ksize; ++v) {
          T* gd = grad_atoms + u * g.ksize + v;
          for_atom_blocks(g.atoms, [&](auto ab, int64_t a0) {
            atom_grad_block<T, decltype(ab)::value>(xbase + g.tap_offset(u, v), gz + q * mc, g, a0, gd, taps);
          });
        }
      }
      for (int64_t a = 0; a < g.atoms; ++a) {
        const T* gda = grad_atoms + a * taps;
        for (int64_t k = 0; k < g.num_bases; ++k) {
          const T* basis = bases + k * taps;
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t t = 0; t < taps; ++t) sum += gda[t] * basis[t];
          grad_alpha_b[(a * g.num_bases + k) * pixels + p0 + q] = sum;
        }
      }
    }
  }

  // dL/dx: scattered into the windows of this band's pixels (other bands of the image may overlap
  // them only at their edges, so bands of one image that run at the same time are two apart).
  void input_grads(const T* gz, T* gxb) const {
    const int64_t mc = g.atoms * g.channels, mt = g.atoms * g.taps();
    for (int64_t q = 0; q < count; ++q) {
      T* gxbase = gxb + g.window_offset(p0 + q);
      for_atom_blocks(g.atoms, [&](auto ab, int64_t a0) {
        scatter_block<T, decltype(ab)::value>(atoms + q * mt, gz + q * mc, g, a0, gxbase);
      });
    }
  }
};

// Output rows per band: z within kBandBytes but at least kMinBandPixels for the GEMM, enough bands
// for every thread, and (for backward's two passes) at least as many rows as a window's overlap.
int64_t band_rows(int64_t batch, int64_t out_h, int64_t out_w, int64_t row_bytes, int64_t overlap_rows) {
  const int64_t fit = std::max<int64_t>(kBandBytes / std::max<int64_t>(row_bytes, 1),
                                        (kMinBandPixels + out_w - 1) / out_w);
  const int64_t bands_per_image = (at::get_num_threads() + batch - 1) / batch;
  const int64_t spread = (out_h + bands_per_image - 1) / bands_per_image;
  return std::max<int64_t>({1, overlap_rows, std::min({out_h, fit, spread})});
}

Geometry make_geometry(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& bases,
                       const at::Tensor& coefficients, int64_t ksize, int64_t stride, int64_t padding,
                       int64_t dilation, int64_t groups, int64_t block) {
  TORCH_CHECK(x.dim() == 4 && alpha.dim() == 5 && bases.dim() == 2,
              "fused ACDA: x (B,C,H,W), alpha (B,m,K,Ho,Wo), bases (K,k*k)");
  TORCH_CHECK(bases.size(1) == ksize * ksize && bases.size(0) == alpha.size(2), "fused ACDA: bases must be (K, k*k)");
  TORCH_CHECK(groups >= 1 && coefficients.dim() == 3 && coefficients.size(1) * groups == x.size(1) &&
                  coefficients.size(0) % groups == 0 && coefficients.size(2) == alpha.size(1),
              "fused ACDA: A must be (O, C/groups, m) with groups dividing O");
  const int64_t channels = padded_channels(x.size(1), block);
  const int64_t out_h = alpha.size(3), out_w = alpha.size(4);
  // Bands i and i+2 of an image touch disjoint input rows once a band spans the window overlap.
  const int64_t overlap_rows = (dilation * (ksize - 1) + stride) / stride - 1;
  const int64_t row_bytes = out_w * alpha.size(1) * channels * x.element_size();
  return Geometry{channels, alpha.size(1), alpha.size(2), ksize, stride, dilation, out_h, out_w,
                  x.size(3) + 2 * padding, band_rows(x.size(0), out_h, out_w, row_bytes, overlap_rows)};
}

// x zero-padded in space and in channels (to a multiple of the register block), NHWC.
at::Tensor padded_nhwc(const at::Tensor& x, int64_t padding, int64_t channels) {
  auto xpad = at::zeros({x.size(0), x.size(2) + 2 * padding, x.size(3) + 2 * padding, channels}, x.options());
  auto interior = xpad.narrow(1, padding, x.size(2)).narrow(2, padding, x.size(3)).narrow(3, 0, x.size(1));
  interior.copy_(x.permute({0, 2, 3, 1}));
  return xpad;
}

// A (O, C, m) as the (O, m*Cp) matrix the responses z (pixels, m*Cp) multiply, zero in padded channels.
at::Tensor gemm_weight(const at::Tensor& coefficients, int64_t channels) {
  auto weight = at::zeros({coefficients.size(0), coefficients.size(2), channels}, coefficients.options());
  weight.narrow(2, 0, coefficients.size(1)).copy_(coefficients.permute({0, 2, 1}));
  return weight.view({coefficients.size(0), -1});
}

// a (n x k) times b (m x k) transposed, (n x m), with a and b cast to gemm_type (bf16: AMX/AVX512-BF16,
// accumulating in fp32). fp32/bf16 go through oneDNN's matmul (ATen's linear layers on x86), measured 2x
// faster than at::mm's BLAS (MKL) at these shapes on an AMD EPYC; fp64 and builds without oneDNN use at::mm.
at::Tensor matmul_nt(const at::Tensor& a, const at::Tensor& b, at::ScalarType gemm_type) {
  static const auto onednn_linear = c10::Dispatcher::singleton().findOp({"mkldnn::_linear_pointwise", ""});
  const auto lhs = a.to(gemm_type).contiguous(), rhs = b.to(gemm_type).contiguous();
  if (!onednn_linear || gemm_type == at::kDouble) return at::mm(lhs, rhs.t());
  torch::jit::Stack stack{lhs, rhs, c10::IValue(), std::string("none"), c10::List<std::optional<at::Scalar>>(),
                          c10::IValue()};
  onednn_linear->callBoxed(&stack);
  return stack[0].toTensor();
}

at::ScalarType gemm_type_of(const at::Tensor& x, bool bf16_gemm) {
  return bf16_gemm ? at::kBFloat16 : x.scalar_type();
}

// The 1x1 by A on a band's responses z (count, m*Cp), in one of three forms:
//  dense (groups = 1): one GEMM with W (O, m*Cp);
//  grouped: one GEMM per group, z's columns of that group's C/g channels times A_g (O/g, m*C/g);
//  per-channel (one input channel per group: depthwise, with any channel multiplier): no GEMM, since
//    a group's would be (O/g x m); y[c*mult + j] = sum_a A[c*mult + j, a] z[a, c], vectorised over c.
template <typename T>
struct Mixing {
  enum class Form { dense, grouped, per_channel };
  Form form;
  int64_t groups, out_channels, in_channels, atoms, channels;  // channels: padded, as z's
  at::ScalarType gemm_type;  // the per-channel form computes in T (it has no GEMM to run in bf16)
  // dense (O, m*Cp); grouped (g, O/g, m*C/g); per-channel (m, mult, C)
  at::Tensor weight;
  at::Tensor weight_t;  // backward's GEMM operand, the GEMM forms' weight transposed once (not per band)

  Mixing(const at::Tensor& coefficients, int64_t groups, int64_t channels, at::ScalarType gemm_type,
         bool for_backward = false)
      : form(groups == 1 ? Form::dense : coefficients.size(1) == 1 ? Form::per_channel : Form::grouped),
        groups(groups), out_channels(coefficients.size(0)), in_channels(coefficients.size(1) * groups),
        atoms(coefficients.size(2)), channels(channels),
        gemm_type(form == Form::per_channel ? coefficients.scalar_type() : gemm_type) {
    const int64_t group_out = out_channels / groups, group_in = in_channels / groups;
    if (form == Form::dense) {
      weight = gemm_weight(coefficients, channels).to(gemm_type);
    } else if (form == Form::grouped) {
      weight = coefficients.reshape({groups, group_out, group_in, atoms}).permute({0, 1, 3, 2}).contiguous()
                   .view({groups, group_out, atoms * group_in}).to(gemm_type);
    } else {
      weight = coefficients.reshape({in_channels, group_out, atoms}).permute({2, 1, 0}).contiguous();
    }
    if (for_backward && form != Form::per_channel) weight_t = weight.transpose(-2, -1).contiguous();
  }

  // A thread's dL/dweight accumulator, zero.
  at::Tensor zero_share(const at::TensorOptions& options) const { return at::zeros_like(weight, options); }

  int64_t group_out() const { return out_channels / groups; }
  int64_t group_in() const { return in_channels / groups; }

  // z (count, m*Cp) -> y_band (O, count), a view into y.
  void forward(const at::Tensor& z, at::Tensor y_band) const {
    const int64_t count = z.size(0);
    if (form == Form::dense) {
      y_band.copy_(matmul_nt(z, weight, gemm_type).t());
    } else if (form == Form::grouped) {
      for (int64_t gi = 0; gi < groups; ++gi)
        y_band.narrow(0, gi * group_out(), group_out())
            .copy_(matmul_nt(group_columns(z, gi), weight[gi], gemm_type).t());
    } else {
      const int64_t mult = group_out(), cin = in_channels, mc = atoms * channels;
      auto out = at::empty({count, mult, cin}, z.options());
      const T *zp = z.data_ptr<T>(), *w = weight.data_ptr<T>();
      T* op = out.data_ptr<T>();
      for (int64_t q = 0; q < count; ++q) {
        for (int64_t j = 0; j < mult; ++j) {
          T* o = op + (q * mult + j) * cin;
          std::fill(o, o + cin, T(0));
          for (int64_t a = 0; a < atoms; ++a) {
            const T *wa = w + (a * mult + j) * cin, *za = zp + q * mc + a * channels;
#pragma omp simd
            for (int64_t c = 0; c < cin; ++c) o[c] += wa[c] * za[c];
          }
        }
      }
      y_band.view({cin, mult, count}).copy_(out.permute({2, 1, 0}));
    }
  }

  // Backward of forward for one band: returns dL/dz (count, m*Cp), zero in the padded channels, and adds
  // this band's dL/dweight (weight's shape, unpermuted) to share. gy (O, count) in gemm_type.
  at::Tensor backward(const at::Tensor& gy, const at::Tensor& z, at::Tensor share) const {
    const int64_t count = z.size(0);
    if (form == Form::dense) {
      share.add_(matmul_nt(gy, z.t(), gemm_type));
      return matmul_nt(gy.t(), weight_t, gemm_type).to(z.scalar_type());
    }
    auto gz = at::zeros({count, atoms * channels}, z.options());
    if (form == Form::grouped) {
      auto gz_groups = gz.view({count, atoms, channels});
      for (int64_t gi = 0; gi < groups; ++gi) {
        const auto gyg = gy.narrow(0, gi * group_out(), group_out());
        share[gi].add_(matmul_nt(gyg, group_columns(z, gi).t(), gemm_type));
        gz_groups.narrow(2, gi * group_in(), group_in())
            .copy_(matmul_nt(gyg.t(), weight_t[gi], gemm_type).view({count, atoms, group_in()}));
      }
      return gz;
    }
    const int64_t mult = group_out(), cin = in_channels, mc = atoms * channels;
    const auto gyb = gy.view({cin, mult, count}).permute({2, 1, 0}).contiguous();  // (count, mult, C)
    const T *zp = z.data_ptr<T>(), *w = weight.data_ptr<T>(), *gp = gyb.data_ptr<T>();
    T *gzp = gz.data_ptr<T>(), *sp = share.data_ptr<T>();
    for (int64_t q = 0; q < count; ++q) {
      for (int64_t a = 0; a < atoms; ++a) {
        const T* za = zp + q * mc + a * channels;
        T* gza = gzp + q * mc + a * channels;
        for (int64_t j = 0; j < mult; ++j) {
          const T *wa = w + (a * mult + j) * cin, *g = gp + (q * mult + j) * cin;
          T* s = sp + (a * mult + j) * cin;
#pragma omp simd
          for (int64_t c = 0; c < cin; ++c) {
            gza[c] += wa[c] * g[c];
            s[c] += za[c] * g[c];
          }
        }
      }
    }
    return gz;
  }

  // dL/dA (O, C/g, m) from the summed shares.
  at::Tensor coefficient_grad(const at::Tensor& weight_grad) const {
    if (form == Form::dense)
      return weight_grad.view({out_channels, atoms, channels}).narrow(2, 0, in_channels).permute({0, 2, 1});
    if (form == Form::grouped)
      return weight_grad.view({out_channels, atoms, group_in()}).permute({0, 2, 1});
    return weight_grad.permute({2, 1, 0}).reshape({out_channels, 1, atoms});
  }

  // Group gi's columns of z: (count, m*C/g), contiguous.
  at::Tensor group_columns(const at::Tensor& z, int64_t gi) const {
    return z.view({z.size(0), atoms, channels}).narrow(2, gi * group_in(), group_in()).reshape({z.size(0), -1});
  }
};

template <typename T>
Band<T> band_of(const Geometry& g, const at::Tensor& xpad, const at::Tensor& alpha, const at::Tensor& bases,
                int64_t b, int64_t band, T* atoms, T* z) {
  const int64_t p0 = band * g.band_rows * g.out_w;
  const int64_t count = std::min(g.band_rows * g.out_w, g.pixels() - p0);
  return Band<T>{g, xpad[b].data_ptr<T>(), alpha[b].data_ptr<T>(), bases.data_ptr<T>(), p0, count, atoms, z};
}

}  // namespace

at::Tensor fused_forward(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& bases,
                         const at::Tensor& coefficients, int64_t ksize, int64_t stride, int64_t padding,
                         int64_t dilation, int64_t groups, bool bf16_gemm) {
  at::Tensor y;
  const auto gemm_type = gemm_type_of(x, bf16_gemm);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "acda_fused_forward", [&] {
    const Geometry g = make_geometry(x, alpha, bases, coefficients, ksize, stride, padding, dilation, groups,
                                     channel_block<scalar_t>());
    const auto xpad = padded_nhwc(x, padding, g.channels);
    const Mixing<scalar_t> mixing(coefficients, groups, g.channels, gemm_type);
    const int64_t batch = x.size(0), out_channels = coefficients.size(0), bands = g.bands();
    const int64_t band_pixels = g.band_rows * g.out_w, mc = g.atoms * g.channels;
    y = at::empty({batch, out_channels, g.out_h, g.out_w}, x.options());
    const bool inference = c10::InferenceMode::is_enabled();
    at::parallel_for(0, batch * bands, 1, [&](int64_t begin, int64_t end) {
      c10::InferenceMode same_mode_as_caller(inference);  // worker threads do not inherit it
      auto z = at::empty({band_pixels, mc}, x.options());
      auto atoms = at::empty({band_pixels, g.atoms * g.taps()}, x.options());
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / bands;
        const auto band = band_of<scalar_t>(g, xpad, alpha, bases, b, item % bands, atoms.data_ptr<scalar_t>(),
                                            z.data_ptr<scalar_t>());
        band.form_atoms();
        band.responses();
        auto out = y[b].view({out_channels, g.pixels()}).narrow(1, band.p0, band.count);
        mixing.forward(z.narrow(0, 0, band.count), out);
      }
    });
  });
  return y;
}

std::vector<at::Tensor> fused_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& alpha,
                                       const at::Tensor& bases, const at::Tensor& coefficients, int64_t ksize,
                                       int64_t stride, int64_t padding, int64_t dilation, int64_t groups,
                                       bool bf16_gemm) {
  at::Tensor grad_x, grad_alpha, grad_coefficients;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "acda_fused_backward", [&] {
    const Geometry g = make_geometry(x, alpha, bases, coefficients, ksize, stride, padding, dilation, groups,
                                     channel_block<scalar_t>());
    const auto xpad = padded_nhwc(x, padding, g.channels);
    const Mixing<scalar_t> mixing(coefficients, groups, g.channels, gemm_type_of(x, bf16_gemm), true);
    const auto grad_y_gemm = grad_y.to(mixing.gemm_type);
    const int64_t batch = x.size(0), out_channels = coefficients.size(0), bands = g.bands();
    const int64_t band_pixels = g.band_rows * g.out_w, mc = g.atoms * g.channels;
    auto grad_xpad = at::zeros_like(xpad);
    grad_alpha = at::empty_like(alpha);
    // Each thread sums its bands' share of dL/dW; the shares are added once at the end.
    auto grad_weight_shares = at::stack(std::vector<at::Tensor>(at::get_num_threads(), mixing.zero_share(x.options())));
    const bool inference = c10::InferenceMode::is_enabled();
    // Two passes (even bands, then odd ones): bands of one image running together never share an input row.
    for (int64_t parity = 0; parity < 2; ++parity) {
      const int64_t bands_of_parity = (bands - parity + 1) / 2;
      at::parallel_for(0, batch * bands_of_parity, 1, [&](int64_t begin, int64_t end) {
        c10::InferenceMode same_mode_as_caller(inference);
        auto z = at::empty({band_pixels, mc}, x.options());
        auto atoms = at::empty({band_pixels, g.atoms * g.taps()}, x.options());
        auto grad_atoms = at::empty({g.atoms * g.taps()}, x.options());
        auto grad_weight = grad_weight_shares[std::min<int64_t>(at::get_thread_num(), grad_weight_shares.size(0) - 1)];
        for (int64_t item = begin; item < end; ++item) {
          const int64_t b = item / bands_of_parity, band_index = 2 * (item % bands_of_parity) + parity;
          const auto band = band_of<scalar_t>(g, xpad, alpha, bases, b, band_index, atoms.data_ptr<scalar_t>(),
                                              z.data_ptr<scalar_t>());
          band.form_atoms();
          band.responses();
          auto gy = grad_y_gemm[b].view({out_channels, g.pixels()}).narrow(1, band.p0, band.count);
          auto zb = z.narrow(0, 0, band.count);
          const auto gzb = mixing.backward(gy, zb, grad_weight);
          band.alpha_grads(gzb.data_ptr<scalar_t>(), grad_atoms.data_ptr<scalar_t>(),
                           grad_alpha[b].data_ptr<scalar_t>());
          band.input_grads(gzb.data_ptr<scalar_t>(), grad_xpad[b].data_ptr<scalar_t>());
        }
      });
    }
    const int64_t channels = x.size(1), height = x.size(2), width = x.size(3);
    grad_x = grad_xpad.narrow(1, padding, height).narrow(2, padding, width).narrow(3, 0, channels)
                 .permute({0, 3, 1, 2});
    grad_coefficients = mixing.coefficient_grad(grad_weight_shares.sum(0));
  });
  return {grad_x, grad_alpha, grad_coefficients};
}

// A plain op library (no pybind11, so it compiles in a fraction of the time): torch.ops.acda_fused_cpu.*
TORCH_LIBRARY(acda_fused_cpu, m) {
  m.def("forward(Tensor x, Tensor alpha, Tensor bases, Tensor coefficients, int ksize, int stride, int padding,"
        " int dilation, int groups, bool bf16_gemm) -> Tensor",
        &fused_forward);
  m.def("backward(Tensor grad_y, Tensor x, Tensor alpha, Tensor bases, Tensor coefficients, int ksize, int stride,"
        " int padding, int dilation, int groups, bool bf16_gemm) -> Tensor[]",
        &fused_backward);
}
