// Fused ACDA atom convolution on CPU, channel-major and vectorised over output pixels.
//
//   z[c*m + a, p] = sum_t D[a, t, p] * xpad[c, window_t(p)]        (C*m responses per output pixel p)
//   y[o, p]       = sum_{c, a} A[o, c, a] z[c*m + a, p]             (A viewed as the (O, C*m) matrix it is)
//
// Work is cut into bands of output rows (a band may span several small images, so the GEMM stays wide).
// Each thread owns one band at a time: it forms the band's atoms D = alpha . bases, its responses z
// (C*m x pixels), and multiplies A by z with a single-threaded GEMM (oneDNN) that writes straight into
// y, so the only full-size tensors are x, alpha and y (and in backward the padded dL/dx), and a call has a
// single parallel region (no per-phase barriers, which stall badly on a loaded machine). Backward
// recomputes z instead of saving it. A small batch (kBatchBandPixels: deep layers) is instead one band whose
// GEMMs run on every thread, between parallel per-pixel passes split by image.
//
// Every per-pixel loop runs over a vector of consecutive output pixels of one row, so no loop ever needs
// a horizontal sum and the GEMMs take z, dL/dz and dL/dy in the layout they are made in (no transposed
// copies). For that, the rows of x a band reads are zero-padded and split into stride*stride phase planes in
// the thread's scratch (band_planes): the taps of consecutive output pixels then read consecutive addresses at
// every stride and dilation.
// ACDA_VECTOR_BYTES is the build's vector width (fused.py builds one binary per ISA: 64 for AVX-512,
// 32 for AVX2), from which the register blocks below follow.
// Layouts: a band's planes (pieces, C, s*s, rows, Wq), dL/dxq (B, C, s*s, Hq, Wq), alpha (B, m, K, P),
// bases (K, k*k), A (O, C/g, m), y (B, O, P).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#ifndef ACDA_VECTOR_BYTES
#define ACDA_VECTOR_BYTES 16
#endif

namespace at::native {
// oneDNN's matmul, which ATen's own addmm uses for bf16: result = alpha * mat1 @ mat2 + beta * result.
// It reads transposed operands and writes a strided result without copies, and runs near peak on AMD
// and Intel CPUs alike (MKL's sgemm, at::mm's default, ran at half speed on an AMD EPYC at these shapes).
TORCH_API void mkldnn_matmul(const Tensor& mat1, const Tensor& mat2, const Tensor& result, float beta, float alpha);
}  // namespace at::native

namespace {

// A band's responses z stay in L2 (1 MiB); the GEMM wants >= 256 pixels.
constexpr int64_t kBandBytes = 1 << 20;
constexpr int64_t kMinBandPixels = 256;
// Up to this many output pixels in the whole batch (deep layers: resnet18's 7x7 and 4x4 at batch 8), and with
// its responses within two band budgets per thread, the batch is one band whose GEMMs use every thread (oneDNN's
// own threading), and only the per-pixel passes are split, by image: a band per thread made GEMMs 64-196 pixels
// wide that each read all of A (6 MB at 512 channels) and summed a dL/dA share per band: 36-47 GMAC/s per thread
// where the 64x64 layer's GEMMs run at 88-100.
constexpr int64_t kBatchBandPixels = 1024;
std::atomic<int64_t> batch_band_pixels{kBatchBandPixels};  // set_batch_band_pixels: tests run both paths
// The responses' group of pixel vectors: their atoms within this many bytes of L1.
constexpr int64_t kAtomGroupBytes = 16 << 10;

// Pixels per vector, and the register blocks: with 6 atoms and 4 channels (AVX-512: 24 accumulators,
// 6 atom vectors and one input vector in 32 registers; AVX2: 6 + 6 + 1 of 16).
template <typename T>
constexpr int64_t lanes() { return ACDA_VECTOR_BYTES / sizeof(T); }
constexpr int kAtomBlock = 6;
constexpr int kChannelBlock = ACDA_VECTOR_BYTES >= 64 ? 4 : 1;

// Calls fn(std::integral_constant<int, N>(), start) over [0, count) in blocks of N = Block, then of 1.
template <int Block, typename Fn>
inline void for_blocks(int64_t count, Fn&& fn) {
  int64_t start = 0;
  for (; start + Block <= count; start += Block) fn(std::integral_constant<int, Block>(), start);
  for (; start < count; ++start) fn(std::integral_constant<int, 1>(), start);
}

struct Geometry {
  int64_t batch, channels, atoms, num_bases, ksize, stride, dilation, out_h, out_w, padded_w, plane_h, plane_w,
      overlap_rows, band_rows, slab_rows;
  std::vector<int64_t> tap_offsets;  // tap t's offset in a channel's phase planes, from the pixel's own position

  int64_t taps() const { return ksize * ksize; }
  int64_t pixels() const { return out_h * out_w; }
  int64_t rows() const { return batch * out_h; }  // output rows of the whole batch: bands cut these
  int64_t bands() const { return (rows() + band_rows - 1) / band_rows; }
  bool whole_images() const { return band_rows % out_h == 0; }
  int64_t channel_stride() const { return stride * stride * plane_h * plane_w; }
  int64_t image_stride() const { return channels * channel_stride(); }
};

// Tap (u, v) of output pixel (i, j) reads xpad[i*s + u*d, j*s + v*d]: phase plane ((u*d) % s, (v*d) % s)
// at (i + u*d / s, j + v*d / s), so the taps of consecutive j are consecutive in every phase plane.
std::vector<int64_t> tap_offsets(int64_t ksize, int64_t stride, int64_t dilation, int64_t plane_h, int64_t plane_w) {
  std::vector<int64_t> offsets;
  for (int64_t u = 0; u < ksize; ++u) {
    for (int64_t v = 0; v < ksize; ++v) {
      const int64_t du = u * dilation, dv = v * dilation;
      const int64_t phase = (du % stride) * stride + dv % stride;
      offsets.push_back(phase * plane_h * plane_w + (du / stride) * plane_w + dv / stride);
    }
  }
  return offsets;
}

// The geometry of one band's own phase planes (band_planes) for bands of up to `rows` output rows: per piece of
// an image in the band, the plane rows its output rows read (x's planes are never whole in memory: at k=7 they
// were 1.2x x, twice, at backward's memory peak).
Geometry band_geometry(const Geometry& g, int64_t rows) {
  Geometry local = g;
  local.plane_h = std::min(rows, g.out_h) + g.overlap_rows;
  local.tap_offsets = tap_offsets(g.ksize, g.stride, g.dilation, local.plane_h, g.plane_w);
  return local;
}

// Pieces of images a band of `rows` output rows may cover (it may start mid-image).
int64_t band_pieces(const Geometry& g, int64_t rows) { return (rows + g.out_h - 1) / g.out_h + 1; }

// One vector of output pixels: n <= V consecutive pixels of one row. Every loop computes all V lanes (a
// row's last vector reads past the row's end: the phase planes are wide enough, the atoms of lanes >= n
// are zero, and every operand buffer has a vector of slack), so the compiler keeps the accumulators in
// registers; only the stores of per-pixel results are cut to n lanes.
template <typename T>
struct Chunk {
  const T* x;        // the band's phase planes at the pixels' own position (channel 0, phase 0)
  int64_t q;         // band-local index of the first pixel in z and dL/dz (rows of count pixels)
  int64_t qd;        // the same with each row padded to whole vectors: D holds qd / V's atoms at qd * m * k*k
  const T* alpha;    // alpha at the first pixel
  int64_t alpha_plane;  // alpha's stride between its (atom, basis) planes
  T* grad_alpha;     // same place in dL/dalpha
  T* grad_x;         // the image's dL/dxq at the pixels' own position
  int64_t n;
};

// A vector of lanes<T>() values (GCC's vector extension: the compiler keeps arrays of these, indexed by
// compile-time constants, in registers, where it spills plain arrays under `omp simd`).
template <typename T>
struct VectorOf;
// `unaligned`: the same vector at any element's address, for stores.
template <>
struct VectorOf<float> {
  typedef float type __attribute__((vector_size(ACDA_VECTOR_BYTES)));
  typedef float unaligned __attribute__((vector_size(ACDA_VECTOR_BYTES), aligned(alignof(float))));
};
template <>
struct VectorOf<double> {
  typedef double type __attribute__((vector_size(ACDA_VECTOR_BYTES)));
  typedef double unaligned __attribute__((vector_size(ACDA_VECTOR_BYTES), aligned(alignof(double))));
};
template <typename T>
using Vec = typename VectorOf<T>::type;

template <typename T>
inline Vec<T> load(const T* source) {
  Vec<T> value;
  std::memcpy(&value, source, sizeof value);
  return value;
}

// Values, not references: a vector whose address is taken lives on the stack (the accumulator arrays were
// zeroed there with rep stos and stored twice). A typed store, not a memcpy: a memcpy may write any object, so
// after each one the compiler reloaded every size and pointer a loop reads from memory (its captures).
template <typename T>
inline void store(T* target, Vec<T> value) { *reinterpret_cast<typename VectorOf<T>::unaligned*>(target) = value; }

// The first n lanes only (a row's last vector): a plain store when the vector is whole, else one masked store
// (a memcpy of a run-time length is a library call, and at k=3 those calls took longer than the responses'
// multiply-adds).
inline void store_first(float* target, Vec<float> value, int64_t n) {
  if (n == lanes<float>()) return store(target, value);
#if ACDA_VECTOR_BYTES == 64
  _mm512_mask_storeu_ps(target, static_cast<__mmask16>((1u << n) - 1), (__m512)value);
#elif ACDA_VECTOR_BYTES == 32
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  _mm256_maskstore_ps(target, mask, (__m256)value);
#else
  std::memcpy(target, &value, n * sizeof(float));
#endif
}

inline void store_first(double* target, Vec<double> value, int64_t n) {
  if (n == lanes<double>()) return store(target, value);
#if ACDA_VECTOR_BYTES == 64
  _mm512_mask_storeu_pd(target, static_cast<__mmask8>((1u << n) - 1), (__m512d)value);
#elif ACDA_VECTOR_BYTES == 32
  const __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  _mm256_maskstore_pd(target, mask, (__m256d)value);
#else
  std::memcpy(target, &value, n * sizeof(double));
#endif
}

template <typename T>
struct PixelPass {
  static constexpr int64_t V = lanes<T>();
  const Geometry& g;
  int64_t count;         // pixels in the band: the row stride of z

  // D[a, t] of a vector of pixels = sum_k alpha[a, k, p] bases[k, t], zero in lanes past the row's end. Each
  // vector's atoms are one (m, k*k, V) block: as rows of a band-wide (m*k*k, pixels) matrix they lay 1.5 KB
  // apart, in a handful of L1 sets, and the responses' atom loads missed L1.
  void form_atoms(const Chunk<T>& chunk, const T* bases, T* atoms) const {
    const int64_t taps = g.taps(), plane = chunk.alpha_plane;
    for (int64_t a = 0; a < g.atoms; ++a) {
      const T* alpha_a = chunk.alpha + a * g.num_bases * plane;
      for_blocks<8>(taps, [&](auto tb, int64_t t0) {
        constexpr int TB = decltype(tb)::value;
        Vec<T> acc[TB] = {};
        for (int64_t k = 0; k < g.num_bases; ++k) {
          const Vec<T> coefficient = load(alpha_a + k * plane);
          for (int tt = 0; tt < TB; ++tt) acc[tt] += bases[k * taps + t0 + tt] * coefficient;
        }
        for (int tt = 0; tt < TB; ++tt) {
          T* d = atoms + chunk.qd * g.atoms * taps + (a * taps + t0 + tt) * V;
          store(d, acc[tt]);
          if (chunk.n < V) std::fill(d + chunk.n, d + V, T(0));
        }
      });
    }
  }

  // z[c*m + a, q] for every channel and atom: AB x CB accumulators stay in registers over all taps. Sizes are
  // locals: the stores may alias g's fields, which the compiler then reloads after every store.
  void responses(const Chunk<T>& chunk, const T* atoms, T* z, int64_t first_channel, int64_t end_channel) const {
    const int64_t taps = g.taps(), channel_stride = g.channel_stride(), atom_count = g.atoms, rows = count,
                  n = chunk.n;
    const int64_t* offsets = g.tap_offsets.data();
    const T* x = chunk.x;
    const T* chunk_atoms = atoms + chunk.qd * atom_count * taps;
    T* z_chunk = z + chunk.q;
    for_blocks<kChannelBlock>(end_channel - first_channel, [&](auto cb, int64_t block) {
      constexpr int CB = decltype(cb)::value;
      const int64_t c0 = first_channel + block;
      for_blocks<kAtomBlock>(atom_count, [&](auto ab, int64_t a0) {
        constexpr int AB = decltype(ab)::value;
        Vec<T> acc[CB][AB];  // zeroed one by one: `= {}` cleared the array on the stack with rep stos per call
        for (int cc = 0; cc < CB; ++cc)
          for (int aa = 0; aa < AB; ++aa) acc[cc][aa] = Vec<T>{};
        for (int64_t t = 0; t < taps; ++t) {
          const T* xt = x + c0 * channel_stride + offsets[t];
          const T* dt = chunk_atoms + (a0 * taps + t) * V;
          Vec<T> d[AB];
          for (int aa = 0; aa < AB; ++aa) d[aa] = load(dt + aa * taps * V);
          for (int cc = 0; cc < CB; ++cc) {
            const Vec<T> input = load(xt + cc * channel_stride);
            for (int aa = 0; aa < AB; ++aa) acc[cc][aa] += d[aa] * input;
          }
        }
        T* zb = z_chunk + (c0 * atom_count + a0) * rows;
        for (int cc = 0; cc < CB; ++cc)
          for (int aa = 0; aa < AB; ++aa) store_first(zb + (cc * atom_count + aa) * rows, acc[cc][aa], n);
      });
    });
  }

  // dL/dalpha[a, k, p] = sum_t bases[k, t] sum_c gz[c*m + a, q] xpad[c, window_t(p)]; grad_atoms: (m, k*k, V);
  // gz's rows are gz_stride apart.
  void alpha_grads(const Chunk<T>& chunk, const T* gz, int64_t gz_stride, const T* bases, T* grad_atoms) const {
    const int64_t taps = g.taps(), channel_stride = g.channel_stride(), plane = g.pixels();
    for_blocks<kAtomBlock>(g.atoms, [&](auto ab, int64_t a0) {
      constexpr int AB = decltype(ab)::value;
      // taps per block: the register budget of responses' channel block
      for_blocks<kChannelBlock>(taps, [&](auto tb, int64_t t0) {
        constexpr int TB = decltype(tb)::value;
        Vec<T> acc[TB][AB];
        for (int tt = 0; tt < TB; ++tt)
          for (int aa = 0; aa < AB; ++aa) acc[tt][aa] = Vec<T>{};
        for (int64_t c = 0; c < g.channels; ++c) {
          Vec<T> grad[AB];
          for (int aa = 0; aa < AB; ++aa) grad[aa] = load(gz + (c * g.atoms + a0 + aa) * gz_stride + chunk.q);
          for (int tt = 0; tt < TB; ++tt) {
            const Vec<T> input = load(chunk.x + c * channel_stride + g.tap_offsets[t0 + tt]);
            for (int aa = 0; aa < AB; ++aa) acc[tt][aa] += grad[aa] * input;
          }
        }
        for (int tt = 0; tt < TB; ++tt)
          for (int aa = 0; aa < AB; ++aa) store(grad_atoms + ((a0 + aa) * taps + t0 + tt) * V, acc[tt][aa]);
      });
    });
    for (int64_t a = 0; a < g.atoms; ++a) {
      for (int64_t k = 0; k < g.num_bases; ++k) {
        Vec<T> acc = {};
        for (int64_t t = 0; t < taps; ++t) acc += bases[k * taps + t] * load(grad_atoms + (a * taps + t) * V);
        store_first(chunk.grad_alpha + (a * g.num_bases + k) * plane, acc, chunk.n);
      }
    }
  }

  // dL/dxq[c, window_t(p)] += sum_a D[a, t] gz[c*m + a, q], dL/dz held in registers over the taps. Lanes
  // past the row's end add zero (their atoms are zero) to columns of the same plane row, which only this
  // band's thread touches.
  void input_grads(const Chunk<T>& chunk, const T* atoms, const T* gz, int64_t gz_stride) const {
    const int64_t taps = g.taps(), channel_stride = g.channel_stride();
    for_blocks<kChannelBlock>(g.channels, [&](auto cb, int64_t c0) {
      constexpr int CB = decltype(cb)::value;
      for_blocks<kAtomBlock>(g.atoms, [&](auto ab, int64_t a0) {
        constexpr int AB = decltype(ab)::value;
        Vec<T> grad[CB][AB];
        for (int cc = 0; cc < CB; ++cc)
          for (int aa = 0; aa < AB; ++aa)
            grad[cc][aa] = load(gz + ((c0 + cc) * g.atoms + a0 + aa) * gz_stride + chunk.q);
        // Column taps outermost: the taps of one row overlap in dL/dx one element apart, and a load of what the
        // previous tap has just stored, shifted by one element, stalls on store forwarding.
        for (int64_t v = 0; v < g.ksize; ++v) for (int64_t t = v; t < taps; t += g.ksize) {
          const T* dt = atoms + chunk.qd * g.atoms * taps + (a0 * taps + t) * V;
          Vec<T> d[AB];
          for (int aa = 0; aa < AB; ++aa) d[aa] = load(dt + aa * taps * V);
          for (int cc = 0; cc < CB; ++cc) {
            // Two chains of products, added to dL/dx last: its load may wait on a store of an earlier tap.
            Vec<T> sums[2] = {d[0] * grad[cc][0], AB > 1 ? d[AB - 1] * grad[cc][AB - 1] : Vec<T>{}};
            for (int aa = 1; aa < AB - 1; ++aa) sums[aa % 2] += d[aa] * grad[cc][aa];
            T* gx = chunk.grad_x + (c0 + cc) * channel_stride + g.tap_offsets[t];
            store(gx, load(gx) + (sums[0] + sums[1]));
          }
        }
      });
    });
  }
};

// Output rows per band: z within kBandBytes but at least kMinBandPixels for the GEMM. Where whole images fit,
// a band is whole images (no two bands then share an input row) and there is a band per thread; else at
// least two bands per thread (backward runs even and odd bands apart) and at least the rows a window
// overlaps its neighbours by (bands two apart then never touch the same input row). An image whose responses
// fit in twice the budget is still one band when every thread gets an image (resnet18's 28x28 layers: bands
// across images needed two backward passes and copies of y's and dL/dy's bands; whole images took 0.81x the
// time). budget_rows: the rows whose responses fit in kBandBytes.
int64_t band_rows(int64_t batch, int64_t out_h, int64_t out_w, int64_t budget_rows, int64_t overlap_rows) {
  const int64_t fit = std::max<int64_t>(budget_rows, (kMinBandPixels + out_w - 1) / out_w);
  const int64_t threads = at::get_num_threads();
  if (out_h <= fit || (out_h <= 2 * fit && batch >= threads)) {
    // as many bands as threads, or a multiple of it: no thread waits for another's extra band
    const int64_t most_images = std::max<int64_t>(1, fit / out_h);
    const int64_t bands = threads * std::max<int64_t>(1, (batch + threads * most_images - 1) / (threads * most_images));
    return std::max<int64_t>(1, (batch + bands - 1) / bands) * out_h;  // an empty batch: no band, any size
  }
  const int64_t rows = batch * out_h, spread = (rows + 2 * threads - 1) / (2 * threads);
  const int64_t most = std::max<int64_t>({1, overlap_rows, std::min(fit, spread)});
  // Backward runs the even bands, then the odd ones, each pass split over the threads: of the sizes down to the
  // GEMM's minimum (and the overlap), the one whose longest thread has the fewest rows to do, the largest of
  // those. 2x128x64x64 at k=3: 26 bands of 5 rows left a thread 7 bands per pass where 6.5 is the share;
  // 32 of 4 rows divide evenly.
  const int64_t least = std::max<int64_t>({1, overlap_rows, (kMinBandPixels + out_w - 1) / out_w});
  auto longest_thread_rows = [&](int64_t size) {
    const int64_t bands = (rows + size - 1) / size, even = (bands + 1) / 2, odd = bands / 2;
    return ((even + threads - 1) / threads + (odd + threads - 1) / threads) * size;
  };
  int64_t best = most;
  for (int64_t size = most - 1; size >= least; --size)
    if (longest_thread_rows(size) < longest_thread_rows(best)) best = size;
  return best;
}

int64_t vector_lanes(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? lanes<double>() : lanes<float>();
}

Geometry make_geometry(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& bases,
                       const at::Tensor& coefficients, int64_t ksize, int64_t stride, int64_t padding,
                       int64_t dilation, int64_t groups) {
  TORCH_CHECK(x.is_cpu() && alpha.is_cpu() && bases.is_cpu() && coefficients.is_cpu(),
              "fused ACDA is the CPU kernel, got x on ", x.device(), " (impl='auto' picks a kernel for the device)");
  TORCH_CHECK(x.dim() == 4 && alpha.dim() == 5 && bases.dim() == 2,
              "fused ACDA: x (B,C,H,W), alpha (B,m,K,Ho,Wo), bases (K,k*k)");
  TORCH_CHECK(bases.size(1) == ksize * ksize && bases.size(0) == alpha.size(2), "fused ACDA: bases must be (K, k*k)");
  TORCH_CHECK(groups >= 1 && coefficients.dim() == 3 && coefficients.size(1) * groups == x.size(1) &&
                  coefficients.size(0) % groups == 0 && coefficients.size(2) == alpha.size(1),
              "fused ACDA: A must be (O, C/groups, m) with groups dividing O");
  const int64_t out_h = alpha.size(3), out_w = alpha.size(4), vector = vector_lanes(x);
  const int64_t padded_w = (out_w + vector - 1) / vector * vector;
  // Phase planes wide enough for a row's last vector at the widest tap.
  const int64_t plane_h = (x.size(2) + 2 * padding + stride - 1) / stride;
  const int64_t plane_w = std::max((x.size(3) + 2 * padding + stride - 1) / stride,
                                   padded_w + dilation * (ksize - 1) / stride);
  const int64_t overlap_rows = dilation * (ksize - 1) / stride;
  const int64_t row_bytes = out_w * x.size(1) * alpha.size(1) * x.element_size();  // one row's responses
  const int64_t budget_rows = std::max<int64_t>(1, kBandBytes / std::max<int64_t>(row_bytes, 1));
  const int64_t band = band_rows(x.size(0), out_h, out_w, budget_rows, overlap_rows);
  // Backward works through a band a slab at a time, each within kBandBytes: a band may need more rows than
  // that (a 7x7 window overlaps 6), and two threads' scratch is a good part of the step's memory peak.
  const int64_t slabs = (band + budget_rows - 1) / budget_rows;
  return Geometry{x.size(0), x.size(1), alpha.size(1), alpha.size(2), ksize, stride, dilation, out_h, out_w, padded_w,
                  plane_h, plane_w, overlap_rows, band, (band + slabs - 1) / slabs,
                  tap_offsets(ksize, stride, dilation, plane_h, plane_w)};
}

// Calls copy(x's row (b, c, i) as a strided pointer, the phase planes' element of its column j) for every
// row of x: x's pixel (i, j) is xpad's (i + padding, j + padding), which lies in phase plane
// ((i + padding) % s, (j + padding) % s) at ((i + padding) / s, (j + padding) / s).
template <typename Fn>
void for_rows_in_planes(const at::Tensor& x, int64_t padding, const Geometry& g, Fn&& copy) {
  const int64_t s = g.stride, plane = g.plane_h * g.plane_w, channels = x.size(1), height = x.size(2);
  at::parallel_for(0, x.size(0) * channels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bc = begin; bc < end; ++bc) {
      for (int64_t i = 0; i < height; ++i) {
        const int64_t row = i + padding;
        const int64_t planes = bc * g.channel_stride() + (row % s) * s * plane + (row / s) * g.plane_w;
        copy(bc / channels, bc % channels, i, planes);
      }
    }
  });
}

// Calls run(first column j, count, offset in the phase planes) once per column phase: columns j, j + s, ...
// (count of them) of a row land consecutively in one phase plane, from offset on (no division per pixel).
template <typename Fn>
inline void for_columns_in_planes(int64_t width, int64_t padding, int64_t s, int64_t plane, Fn&& run) {
  for (int64_t first = 0; first < std::min(s, width); ++first) {
    const int64_t col = first + padding;
    run(first, (width - first + s - 1) / s, (col % s) * plane + col / s);
  }
}

// dL/dx (B, C, H, W), contiguous, from its padded phase planes dL/dxq[b, c, ph*s + pw, i, j] =
// dL/dxpad[b, c, i*s + ph, j*s + pw]. At stride 1 it is cropped in place, into the front of dL/dxq's own
// storage (no second image-sized buffer at backward's memory peak): every row moves to a lower address than any
// row not yet moved, so one ordered pass is safe.
template <typename T>
at::Tensor from_phase_planes(const at::Tensor& grad_xq, const at::Tensor& x, int64_t padding, const Geometry& g) {
  const int64_t s = g.stride, plane = g.plane_h * g.plane_w, width = x.size(3), rows = x.size(0) * x.size(1) * x.size(2);
  if (s == 1) {
    T* data = grad_xq.data_ptr<T>();
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t image_channel = row / x.size(2), i = row % x.size(2);
      const T* source = data + image_channel * plane + (i + padding) * g.plane_w + padding;
      std::memmove(data + row * width, source, width * sizeof(T));
    }
    return grad_xq.view({-1}).narrow(0, 0, rows * width).view(x.sizes());
  }
  auto grad_x = at::empty(x.sizes(), grad_xq.options());
  const T* source = grad_xq.data_ptr<T>();
  T* target = grad_x.data_ptr<T>();
  for_rows_in_planes(x, padding, g, [&](int64_t b, int64_t c, int64_t i, int64_t planes) {
    T* row = target + ((b * x.size(1) + c) * x.size(2) + i) * width;
    for_columns_in_planes(width, padding, s, plane, [&](int64_t j, int64_t count, int64_t offset) {
      const T* in = source + planes + offset;
      for (int64_t n = 0; n < count; ++n) row[j + n * s] = in[n];
    });
  });
  return grad_x;
}

// Whether oneDNN's matmul runs here: ATen refuses it on CPUs without AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT,
// such as AVX2-only ones, where the GEMMs go through at::mm (MKL) instead. Decided once, by trying.
bool onednn_matmul_runs() {
  static const bool runs = [] {
    try {
      const auto probe = at::ones({2, 2});
      auto out = at::empty({2, 2});
      at::native::mkldnn_matmul(probe, probe, out, 0.f, 1.f);
      return true;
    } catch (const c10::Error&) {
      return false;
    }
  }();
  return runs;
}

// out = a @ b (+ out when accumulate), a and b already in the GEMM's dtype; out float32/float64, strided.
void gemm(const at::Tensor& a, const at::Tensor& b, at::Tensor out, bool accumulate) {
  const bool onednn = a.scalar_type() != at::kDouble && onednn_matmul_runs();
  if (a.scalar_type() == out.scalar_type()) {
    if (onednn) {
      at::native::mkldnn_matmul(a, b, out, accumulate ? 1.f : 0.f, 1.f);
    } else if (accumulate) {
      out.addmm_(a, b);
    } else {
      at::mm_out(out, a, b);
    }
    return;
  }
  // bf16 operands: the GEMM accumulates in fp32 and rounds its result to bf16
  auto rounded = at::empty(out.sizes(), a.options());
  if (onednn) {
    at::native::mkldnn_matmul(a, b, rounded, 0.f, 1.f);
  } else {
    at::mm_out(rounded, a, b);
  }
  if (accumulate) {
    out.add_(rounded);
  } else {
    out.copy_(rounded);
  }
}

// The 1x1 by A on a band's responses z (C*m, count), rows in (c, a) order, in one of three forms:
//  dense (groups = 1): one GEMM with A viewed as (O, C*m);
//  grouped: one GEMM per group: A_g (O/g, C/g*m) times z's rows of that group's channels (contiguous);
//  per-channel (one input channel per group: depthwise, with any channel multiplier): no GEMM, since a
//    group's would be (O/g x m); y[c*mult + j] = sum_a A[c*mult + j, a] z[c*m + a], vectorised over pixels.
template <typename T>
struct Mixing {
  enum class Form { dense, grouped, per_channel };
  Form form;
  int64_t groups, out_channels, in_channels, atoms;
  at::ScalarType gemm_type;  // the per-channel form computes in T (it has no GEMM to run in bf16)
  at::Tensor weight;         // (groups, O/g, C/g*m) in gemm_type

  Mixing(const at::Tensor& coefficients, int64_t groups, at::ScalarType gemm_type)
      : form(groups == 1 ? Form::dense : coefficients.size(1) == 1 ? Form::per_channel : Form::grouped),
        groups(groups), out_channels(coefficients.size(0)), in_channels(coefficients.size(1) * groups),
        atoms(coefficients.size(2)), gemm_type(form == Form::per_channel ? coefficients.scalar_type() : gemm_type),
        weight(coefficients.contiguous().view({groups, out_channels / groups, -1}).to(this->gemm_type)) {}

  int64_t group_out() const { return out_channels / groups; }
  int64_t group_rows() const { return in_channels / groups * atoms; }  // z's rows per group

  // z (C*m, count) -> out (O, count) (+ bias (O) when defined), out possibly strided (a band of y). The bias is
  // written first and the GEMM adds to it, while the band is in cache (a separate pass over y took 2-10% of the
  // layer's inference at k=7).
  void forward(const at::Tensor& z, at::Tensor out, const at::Tensor& bias) const {
    if (form != Form::per_channel) {
      const auto zg = z.to(gemm_type);
      if (bias.defined()) out.copy_(bias.view({-1, 1}).expand_as(out));
      for (int64_t gi = 0; gi < groups; ++gi)
        gemm(weight[gi], zg.narrow(0, gi * group_rows(), group_rows()), out.narrow(0, gi * group_out(), group_out()),
             bias.defined());
      return;
    }
    const int64_t mult = group_out(), count = z.size(1), ld = out.stride(0);
    const T *zp = z.data_ptr<T>(), *w = weight.data_ptr<T>();
    T* op = out.data_ptr<T>();
    for (int64_t o = 0; o < out_channels; ++o) {
      const T* zc = zp + (o / mult) * atoms * count;
      T* y = op + o * ld;
      std::fill(y, y + count, bias.defined() ? bias.data_ptr<T>()[o] : T(0));
      for (int64_t a = 0; a < atoms; ++a) {
        const T coefficient = w[o * atoms + a];
#pragma omp simd
        for (int64_t q = 0; q < count; ++q) y[q] += coefficient * zc[a * count + q];
      }
    }
  }

  // dL/dz's row stride for count pixels: an odd number of cache lines (the pixel passes read a vector from each
  // of its C*m rows per pixel vector: rows an even number of lines apart crowd into a few L1 sets).
  static int64_t grad_row_stride(int64_t count) {
    constexpr int64_t line = 64 / sizeof(T);
    return ((count + line - 1) / line | 1) * line;
  }

  // Elements of a storage that holds a band's z (C*m, count) and, once z is used, its dL/dz.
  int64_t scratch_size(int64_t count) const { return in_channels * atoms * grad_row_stride(count) + lanes<T>(); }

  // Backward of forward for one band: dL/dz (C*m, count) from gy (O, count, contiguous, in gemm_type for
  // the GEMM forms), and this band's dL/dweight added to share (weight's shape, in T; written, not added to,
  // unless accumulate: a thread's first band needs no zero-filled share). The GEMM forms write
  // dL/dz over z (its storage, of scratch_size elements) once dL/dweight has used z: one band-sized buffer per
  // thread less at backward's memory peak. dL/dz has a vector of zeros after its end, which the pixel passes
  // read into lanes whose atoms are zero (zero, not garbage: 0 * NaN = NaN).
  at::Tensor backward(const at::Tensor& gy, const at::Tensor& z, const at::Tensor& z_storage, at::Tensor share,
                      bool accumulate) const {
    const int64_t count = z.size(1), rows = z.size(0), stride = grad_row_stride(count);
    const auto zg = form == Form::per_channel ? z : z.to(gemm_type);
    if (form != Form::per_channel)
      for (int64_t gi = 0; gi < groups; ++gi)
        gemm(gy.narrow(0, gi * group_out(), group_out()), zg.narrow(0, gi * group_rows(), group_rows()).t(),
             share[gi], accumulate);
    at::Tensor storage = form == Form::per_channel ? at::empty({scratch_size(count)}, z.options()) : z_storage;
    storage.narrow(0, rows * stride, lanes<T>()).zero_();
    const auto padded_rows = storage.narrow(0, 0, rows * stride).view({rows, stride});
    padded_rows.narrow(1, count, stride - count).zero_();
    at::Tensor gz = padded_rows.narrow(1, 0, count);
    if (form != Form::per_channel) {
      for (int64_t gi = 0; gi < groups; ++gi)
        gemm(weight[gi].t(), gy.narrow(0, gi * group_out(), group_out()),
             gz.narrow(0, gi * group_rows(), group_rows()), false);
      return gz;
    }
    const int64_t mult = group_out();
    const T *zp = z.data_ptr<T>(), *w = weight.data_ptr<T>(), *gp = gy.data_ptr<T>();
    T *gzp = gz.data_ptr<T>(), *sp = share.data_ptr<T>();
    gz.zero_();
    for (int64_t o = 0; o < out_channels; ++o) {
      const T* g = gp + o * count;
      for (int64_t a = 0; a < atoms; ++a) {
        const int64_t row = (o / mult) * atoms + a;
        const T coefficient = w[o * atoms + a];
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t q = 0; q < count; ++q) {
          gzp[row * stride + q] += coefficient * g[q];
          dot += zp[row * count + q] * g[q];
        }
        sp[o * atoms + a] = (accumulate ? sp[o * atoms + a] : T(0)) + dot;
      }
    }
    return gz;
  }
};

// One band: global output rows [row0, row0 + rows) of the batch, and the thread's scratch for it.
template <typename T>
struct Band {
  const Geometry& g;
  int64_t row0, rows;

  int64_t count() const { return rows * g.out_w; }

  // Calls fn(image, first row in the image, rows, band-local pixel of the first) per image the band covers.
  template <typename Fn>
  void for_images(Fn&& fn) const {
    for (int64_t row = row0; row < row0 + rows;) {
      const int64_t b = row / g.out_h, r = row % g.out_h, n = std::min(g.out_h - r, row0 + rows - row);
      fn(b, r, n, (row - row0) * g.out_w);
      row += n;
    }
  }

  // Calls fn(chunk) for every vector of pixels in the band; x_planes: the band's own planes (band_planes, with
  // geometry local), grad_xq: dL/dxq of the whole batch.
  template <typename Fn>
  void for_chunks(const T* x_planes, const Geometry& local, const T* alpha, T* grad_alpha, T* grad_xq,
                  Fn&& fn) const {
    constexpr int64_t V = lanes<T>();
    const int64_t plane = g.pixels(), alpha_stride = g.atoms * g.num_bases * plane, first_image = row0 / g.out_h;
    std::vector<T> last_alpha;  // the batch's last vector of alpha, copied with a vector of slack
    for (int64_t row = row0; row < row0 + rows; ++row) {
      const int64_t b = row / g.out_h, r = row % g.out_h;
      const int64_t local_row = b == first_image ? r - row0 % g.out_h : r;  // in the piece's planes
      for (int64_t j = 0; j < g.out_w; j += V) {
        const int64_t position = r * g.plane_w + j, p = r * g.out_w + j, n = std::min(V, g.out_w - j);
        Chunk<T> chunk{x_planes + (b - first_image) * local.image_stride() + local_row * g.plane_w + j,
                       (row - row0) * g.out_w + j,
                       (row - row0) * g.padded_w + j, alpha + b * alpha_stride + p, plane,
                       grad_alpha ? grad_alpha + b * alpha_stride + p : nullptr,
                       grad_xq ? grad_xq + b * g.image_stride() + position : nullptr, n};
        if (b == g.batch - 1 && p + V > plane) {  // a full vector would read past alpha's end
          last_alpha.assign(g.atoms * g.num_bases * V, T(0));
          for (int64_t plane_index = 0; plane_index < g.atoms * g.num_bases; ++plane_index)
            std::copy_n(chunk.alpha + plane_index * plane, n, last_alpha.data() + plane_index * V);
          chunk.alpha = last_alpha.data();
          chunk.alpha_plane = V;
        }
        fn(chunk);
      }
    }
  }
};

template <typename T>
bool in_one_image(const Band<T>& band) {
  return band.row0 / band.g.out_h == (band.row0 + band.rows - 1) / band.g.out_h;
}

// A (B, O, Ho, Wo) tensor's band as an (O, count) matrix: a view when the band lies in one image (y, which the
// forward writes through it, is contiguous), else a copy. dL/dy may have any strides (an expanded gradient,
// channels_last): it is read a band at a time, never copied whole.
template <typename T>
at::Tensor gather_band(const at::Tensor& tensor, const Band<T>& band) {
  const auto& g = band.g;
  if (in_one_image(band))
    return tensor[band.row0 / g.out_h].reshape({tensor.size(1), -1}).narrow(1, (band.row0 % g.out_h) * g.out_w,
                                                                           band.count());
  auto gathered = at::empty({tensor.size(1), band.count()}, tensor.options());
  band.for_images([&](int64_t b, int64_t r, int64_t n, int64_t q) {
    gathered.narrow(1, q, n * g.out_w).copy_(tensor[b].reshape({tensor.size(1), -1}).narrow(1, r * g.out_w, n * g.out_w));
  });
  return gathered;
}

// values (O, count) written into a (B, O, Ho, Wo) tensor's band.
template <typename T>
void scatter_band(const at::Tensor& values, at::Tensor& tensor, const Band<T>& band) {
  const auto& g = band.g;
  band.for_images([&](int64_t b, int64_t r, int64_t n, int64_t q) {
    tensor[b].view({tensor.size(1), -1}).narrow(1, r * g.out_w, n * g.out_w).copy_(values.narrow(1, q, n * g.out_w));
  });
}

// y's band = A z (+ bias): written in place where the band lies in one image (y's band is then a view), else
// through a copy scattered to the images it covers.
template <typename T>
void write_band(const Mixing<T>& mixing, const at::Tensor& z, at::Tensor& y, const Band<T>& band,
                const at::Tensor& bias) {
  if (in_one_image(band)) return mixing.forward(z, gather_band(y, band), bias);
  auto out = at::empty({y.size(1), band.count()}, y.options());
  mixing.forward(z, out, bias);
  scatter_band(out, y, band);
}

// A band's own phase planes (geometry local = band_geometry): piece k of the band (its rows of image b from output
// row r on) holds, in plane row l of phase (ph, pw), xpad[b, c, (r + l)*s + ph, j*s + pw] (x in any layout,
// channels_last included), zero where that lies in the padding or past it.
template <typename T>
void band_planes(const at::Tensor& x, int64_t padding, const Band<T>& band, const Geometry& local, T* target) {
  const Geometry& g = band.g;
  const int64_t s = g.stride, plane = local.plane_h * g.plane_w, height = x.size(2), width = x.size(3);
  const int64_t step = x.stride(3);
  auto columns_before = [&](int64_t padded_col, int64_t phase) {  // plane columns c with c*s + phase < padded_col
    return std::clamp<int64_t>((padded_col - phase + s - 1) / s, 0, g.plane_w);
  };
  const T* source = x.data_ptr<T>();
  int64_t piece = 0;
  band.for_images([&](int64_t b, int64_t r, int64_t n, int64_t) {
    for (int64_t c = 0; c < g.channels; ++c) {
      T* planes = target + piece * local.image_stride() + c * local.channel_stride();
      for (int64_t ph = 0; ph < s; ++ph) {
        for (int64_t l = 0; l < n + g.overlap_rows; ++l) {
          T* row = planes + ph * s * plane + l * g.plane_w;  // phase (ph, 0); phase (ph, pw) is pw planes on
          const int64_t i = (r + l) * s + ph - padding;      // x's row
          if (i < 0 || i >= height) {
            for (int64_t pw = 0; pw < s; ++pw) std::fill_n(row + pw * plane, g.plane_w, T(0));
            continue;
          }
          for (int64_t pw = 0; pw < s; ++pw) {
            const int64_t first = columns_before(padding, pw);
            const int64_t last = std::max(first, columns_before(padding + width, pw));
            std::fill(row + pw * plane, row + pw * plane + first, T(0));
            std::fill(row + pw * plane + last, row + pw * plane + g.plane_w, T(0));
          }
          const T* x_row = source + b * x.stride(0) + c * x.stride(1) + i * x.stride(2);
          for_columns_in_planes(width, padding, s, plane, [&](int64_t j, int64_t count, int64_t offset) {
            T* out = row + offset;
            if (s * step == 1) {  // a contiguous row into one plane: a plain copy (the loop below is not vectorised)
              std::copy_n(x_row + j, count, out);
            } else {
              for (int64_t k = 0; k < count; ++k) out[k] = x_row[(j + k * s) * step];
            }
          });
        }
      }
    }
    ++piece;
  });
}

// A band's atoms D (m*k*k, count) and responses z (C*m, count), both with rows of stride count.
// The responses run over one block of input channels at a time for a group of pixel vectors whose atoms fit in
// L1, so those channels' rows of x are read from L1 by every vector of the group (vector by vector over all
// channels, at k=3 the loads of x from L2 took longer than the multiply-adds; 4-8% faster forward at k=3).
template <typename T>
void form_responses(const Band<T>& band, const T* x_planes, const Geometry& local, const T* alpha, const T* bases,
                    T* atoms, T* z, int64_t z_stride) {
  const Geometry& g = band.g;
  const PixelPass<T> pass{local, z_stride};
  std::vector<Chunk<T>> chunks;
  band.for_chunks(x_planes, local, alpha, nullptr, nullptr, [&](const Chunk<T>& chunk) {
    pass.form_atoms(chunk, bases, atoms);
    chunks.push_back(chunk);
  });
  const int64_t atom_bytes = g.atoms * g.taps() * lanes<T>() * sizeof(T);
  const int64_t group = std::max<int64_t>(1, kAtomGroupBytes / atom_bytes);
  for (size_t first = 0; first < chunks.size(); first += group) {
    const size_t end = std::min(chunks.size(), first + group);
    for (int64_t c0 = 0; c0 < g.channels; c0 += kChannelBlock)
      for (size_t i = first; i < end; ++i)
        pass.responses(chunks[i], atoms, z, c0, std::min(g.channels, c0 + kChannelBlock));
  }
}

// The band's (C*m, count) responses in a thread's scratch.
template <typename T>
at::Tensor responses_of(const Band<T>& band, const at::Tensor& storage) {
  const int64_t rows = band.g.channels * band.g.atoms;
  return storage.narrow(0, 0, rows * band.count()).view({rows, band.count()});
}

// dL/dalpha and dL/dxq of a band from its dL/dz (gz at the band's first pixel, rows gz_stride apart), reading
// the band's planes (geometry local) and atoms; grad_atoms: the thread's (m, k*k, V) scratch.
template <typename T>
void pixel_grads(const Band<T>& band, const T* planes, const Geometry& local, const T* alpha, const T* bases,
                 const T* atoms, const T* gz, int64_t gz_stride, T* grad_alpha, T* grad_xq, T* grad_atoms) {
  const PixelPass<T> x_pass{local, 0}, grad_pass{band.g, 0};  // reading the band's planes, writing dL/dxq
  band.for_chunks(planes, local, alpha, grad_alpha, grad_xq, [&](const Chunk<T>& chunk) {
    x_pass.alpha_grads(chunk, gz, gz_stride, bases, grad_atoms);
    grad_pass.input_grads(chunk, atoms, gz, gz_stride);
  });
}

at::ScalarType gemm_type_of(const at::Tensor& x, bool bf16_gemm) {
  return bf16_gemm ? at::kBFloat16 : x.scalar_type();
}

// Whether the whole batch is one band (kBatchBandPixels); the per-channel form has no GEMM to share.
template <typename T>
bool batch_is_one_band(const Geometry& g, const Mixing<T>& mixing) {
  const int64_t pixels = g.batch * g.pixels(), bytes = pixels * g.channels * g.atoms * int64_t(sizeof(T));
  return mixing.form != Mixing<T>::Form::per_channel && pixels > 0 && pixels <= batch_band_pixels &&
         bytes <= 2 * at::get_num_threads() * kBandBytes;
}

// The batch band's parts for the per-pixel passes: whole images, at most one part per thread.
template <typename T>
std::vector<Band<T>> image_parts(const Geometry& g) {
  const int64_t count = std::min<int64_t>(at::get_num_threads(), g.batch);
  std::vector<Band<T>> parts;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t first = i * g.batch / count, end = (i + 1) * g.batch / count;
    if (end > first) parts.push_back(Band<T>{g, first * g.out_h, (end - first) * g.out_h});
  }
  return parts;
}

// The batch band's responses z (C*m, batch pixels), each part's columns formed by one thread; each part's planes
// and atoms are kept for the backward passes. local: band_geometry of whole images.
template <typename T>
void batch_responses(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& bases, int64_t padding,
                     const Geometry& local, const std::vector<Band<T>>& parts, std::vector<at::Tensor>& planes,
                     std::vector<at::Tensor>& atoms, const at::Tensor& z) {
  planes.resize(parts.size());
  atoms.resize(parts.size());
  const T *alpha_data = alpha.template data_ptr<T>(), *bases_data = bases.template data_ptr<T>();
  T* z_data = z.template data_ptr<T>();
  const bool inference = c10::InferenceMode::is_enabled();
  at::parallel_for(0, static_cast<int64_t>(parts.size()), 1, [&](int64_t begin, int64_t end) {
    c10::InferenceMode same_mode_as_caller(inference);
    at::NoGradGuard no_grad;
    for (int64_t i = begin; i < end; ++i) {
      const Band<T>& part = parts[i];
      const Geometry& g = part.g;
      atoms[i] = at::empty({g.atoms * g.taps() * part.rows * g.padded_w}, x.options());
      planes[i] = at::empty({band_pieces(g, part.rows) * local.image_stride()}, x.options());
      T* part_planes = planes[i].template data_ptr<T>();
      band_planes(x, padding, part, local, part_planes);
      form_responses(part, part_planes, local, alpha_data, bases_data, atoms[i].template data_ptr<T>(),
                     z_data + part.row0 * g.out_w, z.stride(0));
    }
  });
}

template <typename T>
void batch_band_forward(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& bases, const at::Tensor& bias,
                        int64_t padding, const Geometry& g, const Mixing<T>& mixing, at::Tensor& y) {
  const Band<T> batch{g, 0, g.rows()};
  const auto parts = image_parts<T>(g);
  std::vector<at::Tensor> planes, atoms;
  auto z_storage = at::empty({g.channels * g.atoms * batch.count()}, x.options());
  const auto z = responses_of(batch, z_storage);
  batch_responses(x, alpha, bases, padding, band_geometry(g, g.out_h), parts, planes, atoms, z);
  write_band(mixing, z, y, batch, bias);
}

// dL/dalpha and dL/dxq written, dL/dA into grad_weight (weight's shape).
template <typename T>
void batch_band_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& alpha,
                         const at::Tensor& bases, int64_t padding, const Geometry& g, const Mixing<T>& mixing,
                         at::Tensor& grad_alpha, at::Tensor& grad_xq, at::Tensor& grad_weight) {
  const Band<T> batch{g, 0, g.rows()};
  const Geometry local = band_geometry(g, g.out_h);
  const auto parts = image_parts<T>(g);
  std::vector<at::Tensor> planes, atoms;
  auto z_storage = at::empty({mixing.scratch_size(batch.count())}, x.options());
  const auto z = responses_of(batch, z_storage);
  batch_responses(x, alpha, bases, padding, local, parts, planes, atoms, z);
  const auto gz = mixing.backward(gather_band(grad_y, batch).contiguous(), z, z_storage, grad_weight, false);
  const T *alpha_data = alpha.template data_ptr<T>(), *bases_data = bases.template data_ptr<T>();
  T *grad_alpha_data = grad_alpha.template data_ptr<T>(), *grad_xq_data = grad_xq.template data_ptr<T>();
  const bool inference = c10::InferenceMode::is_enabled();
  at::parallel_for(0, static_cast<int64_t>(parts.size()), 1, [&](int64_t begin, int64_t end) {
    c10::InferenceMode same_mode_as_caller(inference);
    at::NoGradGuard no_grad;
    auto grad_atoms = at::empty({g.atoms * g.taps() * lanes<T>()}, x.options());
    for (int64_t i = begin; i < end; ++i)
      pixel_grads(parts[i], planes[i].template data_ptr<T>(), local, alpha_data, bases_data,
                  atoms[i].template data_ptr<T>(), gz.template data_ptr<T>() + parts[i].row0 * g.out_w,
                  gz.stride(0), grad_alpha_data, grad_xq_data, grad_atoms.template data_ptr<T>());
  });
}

}  // namespace

at::Tensor fused_forward(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& bases,
                         const at::Tensor& coefficients, int64_t ksize, int64_t stride, int64_t padding,
                         int64_t dilation, int64_t groups, bool bf16_gemm, const c10::optional<at::Tensor>& bias) {
  at::NoGradGuard no_grad;
  at::Tensor y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "acda_fused_forward", [&] {
    const Geometry g = make_geometry(x, alpha, bases, coefficients, ksize, stride, padding, dilation, groups);
    const Geometry local = band_geometry(g, g.band_rows);
    const Mixing<scalar_t> mixing(coefficients, groups, gemm_type_of(x, bf16_gemm));
    const int64_t out_channels = coefficients.size(0), band_pixels = g.band_rows * g.out_w;
    y = at::empty({g.batch, out_channels, g.out_h, g.out_w}, x.options());
    TORCH_CHECK(!bias || (bias->dim() == 1 && bias->size(0) == out_channels &&
                          bias->scalar_type() == x.scalar_type()),
                "fused ACDA: bias must be (O,) in x's dtype");
    const at::Tensor bias_values = bias ? bias->contiguous() : at::Tensor();
    if (batch_is_one_band(g, mixing)) return batch_band_forward(x, alpha, bases, bias_values, padding, g, mixing, y);
    const bool inference = c10::InferenceMode::is_enabled();
    at::parallel_for(0, g.bands(), 1, [&](int64_t begin, int64_t end) {
      c10::InferenceMode same_mode_as_caller(inference);  // worker threads do not inherit it
      at::NoGradGuard no_grad;  // nor grad mode: this op's inner ATen calls are not autograd's business
      auto z_storage = at::empty({g.channels * g.atoms * band_pixels}, x.options());
      auto atoms = at::empty({g.atoms * g.taps() * g.band_rows * g.padded_w}, x.options());
      auto planes = at::empty({band_pieces(g, g.band_rows) * local.image_stride()}, x.options());
      for (int64_t index = begin; index < end; ++index) {
        const Band<scalar_t> band{g, index * g.band_rows, std::min(g.band_rows, g.rows() - index * g.band_rows)};
        const auto z = responses_of(band, z_storage);
        band_planes(x, padding, band, local, planes.data_ptr<scalar_t>());
        form_responses(band, planes.data_ptr<scalar_t>(), local, alpha.data_ptr<scalar_t>(),
                       bases.data_ptr<scalar_t>(), atoms.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), z.stride(0));
        write_band(mixing, z, y, band, bias_values);
      }
    });
  });
  return y;
}

std::vector<at::Tensor> fused_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& alpha,
                                       const at::Tensor& bases, const at::Tensor& coefficients, int64_t ksize,
                                       int64_t stride, int64_t padding, int64_t dilation, int64_t groups,
                                       bool bf16_gemm) {
  at::NoGradGuard no_grad;
  at::Tensor grad_x, grad_alpha, grad_coefficients;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "acda_fused_backward", [&] {
    const Geometry g = make_geometry(x, alpha, bases, coefficients, ksize, stride, padding, dilation, groups);
    const Geometry local = band_geometry(g, g.slab_rows);
    const Mixing<scalar_t> mixing(coefficients, groups, gemm_type_of(x, bf16_gemm));
    const auto grad_y_gemm = grad_y.to(mixing.gemm_type);
    const int64_t bands = g.bands(), slab_pixels = g.slab_rows * g.out_w;
    auto grad_xq = at::zeros({g.batch, g.channels, g.stride * g.stride, g.plane_h, g.plane_w}, x.options());
    grad_alpha = at::empty_like(alpha);
    // Each thread sums its bands' share of dL/dA, thread 0 straight into the result, the others into shares
    // added to it at the end. A thread's first band writes its share, so nothing is zero-filled (at resnet18's
    // 512-channel layers, filling and summing a share per thread took longer than the GEMMs).
    const int64_t threads = at::get_num_threads();
    auto grad_weight = at::empty(mixing.weight.sizes(), x.options());
    at::Tensor other_shares;
    std::vector<char> share_written(threads, 0);
    if (batch_is_one_band(g, mixing)) {
      batch_band_backward(grad_y_gemm, x, alpha, bases, padding, g, mixing, grad_alpha, grad_xq, grad_weight);
      share_written[0] = 1;  // its GEMM wrote the whole of dL/dA; no other share
    } else {
      other_shares = at::empty({threads - 1, mixing.weight.size(0), mixing.weight.size(1), mixing.weight.size(2)},
                               x.options());
      const bool inference = c10::InferenceMode::is_enabled();
      // Bands of whole images run in one pass. Otherwise two (even bands, then odd ones): bands of one image
      // running together then never share an input row.
      const int64_t passes = g.whole_images() ? 1 : 2;
      for (int64_t parity = 0; parity < passes; ++parity) {
        at::parallel_for(0, (bands - parity + passes - 1) / passes, 1, [&](int64_t begin, int64_t end) {
          c10::InferenceMode same_mode_as_caller(inference);
          at::NoGradGuard no_grad;
          auto z_storage = at::empty({mixing.scratch_size(slab_pixels)}, x.options());
          auto atoms = at::empty({g.atoms * g.taps() * g.slab_rows * g.padded_w}, x.options());
          auto grad_atoms = at::empty({g.atoms * g.taps() * lanes<scalar_t>()}, x.options());
          auto planes = at::empty({band_pieces(g, g.slab_rows) * local.image_stride()}, x.options());
          const int64_t thread = std::min<int64_t>(at::get_thread_num(), threads - 1);
          auto share = thread == 0 ? grad_weight : other_shares[thread - 1];
          for (int64_t item = begin; item < end; ++item) {
            const int64_t first = (passes * item + parity) * g.band_rows;
            const int64_t last = std::min(first + g.band_rows, g.rows());
            for (int64_t row = first; row < last; row += g.slab_rows) {
              const Band<scalar_t> slab{g, row, std::min(g.slab_rows, last - row)};
              const auto z = responses_of(slab, z_storage);
              band_planes(x, padding, slab, local, planes.data_ptr<scalar_t>());
              form_responses(slab, planes.data_ptr<scalar_t>(), local, alpha.data_ptr<scalar_t>(),
                             bases.data_ptr<scalar_t>(), atoms.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(),
                             z.stride(0));
              const auto gz = mixing.backward(gather_band(grad_y_gemm, slab).contiguous(), z, z_storage, share,
                                              share_written[thread]);
              share_written[thread] = 1;
              pixel_grads(slab, planes.data_ptr<scalar_t>(), local, alpha.data_ptr<scalar_t>(),
                          bases.data_ptr<scalar_t>(), atoms.data_ptr<scalar_t>(), gz.data_ptr<scalar_t>(),
                          gz.stride(0), grad_alpha.data_ptr<scalar_t>(), grad_xq.data_ptr<scalar_t>(),
                          grad_atoms.data_ptr<scalar_t>());
            }
          }
        });
      }
    }
    grad_x = from_phase_planes<scalar_t>(grad_xq, x, padding, g);
    if (!share_written[0]) grad_weight.zero_();  // thread 0 had no band (an empty batch)
    for (int64_t thread = 1; thread < threads; ++thread)
      if (share_written[thread]) grad_weight.add_(other_shares[thread - 1]);
    grad_coefficients = grad_weight.view(coefficients.sizes());
  });
  return {grad_x, grad_alpha, grad_coefficients};
}

// Sets the batch pixels up to which the batch is one band (kBatchBandPixels); returns the previous setting.
int64_t set_batch_band_pixels(int64_t pixels) { return batch_band_pixels.exchange(pixels); }

// A plain op library (no pybind11, so it compiles in a fraction of the time): torch.ops.acda_fused_cpu.*
TORCH_LIBRARY(acda_fused_cpu, m) {
  m.def("forward(Tensor x, Tensor alpha, Tensor bases, Tensor coefficients, int ksize, int stride, int padding,"
        " int dilation, int groups, bool bf16_gemm, Tensor? bias=None) -> Tensor",
        &fused_forward);
  m.def("backward(Tensor grad_y, Tensor x, Tensor alpha, Tensor bases, Tensor coefficients, int ksize, int stride,"
        " int padding, int dilation, int groups, bool bf16_gemm) -> Tensor[]",
        &fused_backward);
  m.def("set_batch_band_pixels(int pixels) -> int", &set_batch_band_pixels);
}
