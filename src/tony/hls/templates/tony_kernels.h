// tony_kernels.h -- one kernel per IR op, templated on a layer-parameter struct P.
//
// Every kernel implements docs/arithmetic.md exactly: accumulations are exact in P::acc_t
// (the compiler bounds |acc| from the weights and refuses layers that could overflow ACC_BITS),
// rescaling runs in 64 bits (tony::requant) and every stored value is saturated first.
// The MAC ops (conv2d, dense) run on a ROWS x COLS array of multipliers: each pipelined step
// feeds ROWS reduction elements to COLS output channels at once (ROWS*COLS MACs per cycle).
// Tensors are flat row-major arrays of one sample (NCHW without the batch axis).
#ifndef TONY_KERNELS_H
#define TONY_KERNELS_H

#include "tony_types.h"

namespace tony {

// Depthwise Conv (G == C == M): the array's depthwise mode (docs/architecture.md). Column c
// takes its own channel (a tile of COLS channels), row r one tap of the kernel, so each step
// does ROWS*COLS useful MACs instead of the ROWS of a one-channel group.
template <class P>
void conv2d_depthwise(const typename P::in_t x[P::C * P::H * P::W],
                      const typename P::w_t w[P::M * P::KH * P::KW],
                      const typename P::b_t b[P::M], const int shift[], const int mult[],
                      typename P::out_t y[P::M * P::OH * P::OW]) {
    const int KK = P::KH * P::KW;
    const int KT = (KK + P::ROWS - 1) / P::ROWS, CT = (P::M + P::COLS - 1) / P::COLS;
    typename P::acc_t acc[P::COLS];
    TONY_HLS(ARRAY_PARTITION variable=acc complete)
TONY_LOOP(dw_row)
    for (int oh = 0; oh < P::OH; oh++) {
    TONY_LOOP(dw_col)
        for (int ow = 0; ow < P::OW; ow++) {
        TONY_LOOP(dw_ctile)
            for (int ct = 0; ct < CT; ct++) {
            TONY_LOOP(dw_init)
                for (int c = 0; c < P::COLS; c++) {
                    TONY_HLS(UNROLL)
                    const int m = ct * P::COLS + c;
                    acc[c] = (P::HAS_BIAS && m < P::M) ? (typename P::acc_t)b[m] : 0;
                }
            TONY_LOOP(dw_ktile)
                for (int kt = 0; kt < KT; kt++) {
                    TONY_HLS(PIPELINE II=1)
                TONY_LOOP(dw_mac_col)
                    for (int c = 0; c < P::COLS; c++) {
                        TONY_HLS(UNROLL)
                    TONY_LOOP(dw_mac_row)
                        for (int r = 0; r < P::ROWS; r++) {
                            TONY_HLS(UNROLL)
                            const int k = kt * P::ROWS + r, m = ct * P::COLS + c;
                            const int u = k / P::KW, v = k % P::KW;
                            const int iy = oh * P::SH - P::PT + u * P::DH;
                            const int ix = ow * P::SW - P::PL + v * P::DW;
                            if (k < KK && m < P::M) {
                                const bool in = iy >= 0 && iy < P::H && ix >= 0 && ix < P::W;
                                const wide_t xv = in ? (wide_t)x[(m * P::H + iy) * P::W + ix] - P::XZP : 0;
                                const wide_t wv = (wide_t)w[m * KK + k] - P::WZP;
                                acc[c] += (typename P::acc_t)(xv * wv);
                            }
                        }
                    }
                }
            TONY_LOOP(dw_store)
                for (int c = 0; c < P::COLS; c++) {
                    TONY_HLS(UNROLL)
                    const int m = ct * P::COLS + c;
                    if (m < P::M) {
                        const int i = P::PER_CHANNEL ? m : 0;
                        y[(m * P::OH + oh) * P::OW + ow] = (typename P::out_t)requant(
                            acc[c], mult[i], shift[i], P::ROUND, P::ZP, P::LO, P::HI);
                    }
                }
            }
        }
    }
}

// Conv (docs/arithmetic.md, 'MAC ops'): implicit im2col with padding, stride, dilation, groups
// (depthwise when G == C == M: conv2d_depthwise). w is [M][C/G][KH][KW]; padding reads the input
// zero point.
template <class P>
void conv2d(const typename P::in_t x[P::C * P::H * P::W],
            const typename P::w_t w[P::M * (P::C / P::G) * P::KH * P::KW],
            const typename P::b_t b[P::M], const int shift[], const int mult[],
            typename P::out_t y[P::M * P::OH * P::OW]) {
    if (P::G == P::C && P::G == P::M && P::G > 1) {
        conv2d_depthwise<P>(x, w, b, shift, mult, y);
        return;
    }
    const int CG = P::C / P::G, MG = P::M / P::G, KK = P::KH * P::KW, K = CG * KK;
    const int KT = (K + P::ROWS - 1) / P::ROWS, MT = (MG + P::COLS - 1) / P::COLS;
    typename P::acc_t acc[P::COLS];
    TONY_HLS(ARRAY_PARTITION variable=acc complete)
    wide_t xv[P::ROWS];
    TONY_HLS(ARRAY_PARTITION variable=xv complete)
TONY_LOOP(conv_group)
    for (int g = 0; g < P::G; g++) {
    TONY_LOOP(conv_row)
        for (int oh = 0; oh < P::OH; oh++) {
        TONY_LOOP(conv_col)
            for (int ow = 0; ow < P::OW; ow++) {
            TONY_LOOP(conv_mtile)
                for (int mt = 0; mt < MT; mt++) {
                TONY_LOOP(conv_init)
                    for (int c = 0; c < P::COLS; c++) {
                        TONY_HLS(UNROLL)
                        const int m = g * MG + mt * P::COLS + c;
                        acc[c] = (P::HAS_BIAS && mt * P::COLS + c < MG) ? (typename P::acc_t)b[m] : 0;
                    }
                TONY_LOOP(conv_ktile)
                    for (int kt = 0; kt < KT; kt++) {
                        TONY_HLS(PIPELINE II=1)
                    TONY_LOOP(conv_fetch)
                        for (int r = 0; r < P::ROWS; r++) {
                            TONY_HLS(UNROLL)
                            const int k = kt * P::ROWS + r;
                            const int ci = k / KK, u = (k % KK) / P::KW, v = k % P::KW;
                            const int iy = oh * P::SH - P::PT + u * P::DH;
                            const int ix = ow * P::SW - P::PL + v * P::DW;
                            const bool in = k < K && iy >= 0 && iy < P::H && ix >= 0 && ix < P::W;
                            xv[r] = in ? (wide_t)x[((g * CG + ci) * P::H + iy) * P::W + ix] - P::XZP : 0;
                        }
                    TONY_LOOP(conv_mac_col)
                        for (int c = 0; c < P::COLS; c++) {
                            TONY_HLS(UNROLL)
                        TONY_LOOP(conv_mac_row)
                            for (int r = 0; r < P::ROWS; r++) {
                                TONY_HLS(UNROLL)
                                const int k = kt * P::ROWS + r, mg = mt * P::COLS + c;
                                if (k < K && mg < MG) {
                                    const wide_t wv = (wide_t)w[(g * MG + mg) * K + k] - P::WZP;
                                    acc[c] += (typename P::acc_t)(xv[r] * wv);
                                }
                            }
                        }
                    }
                TONY_LOOP(conv_store)
                    for (int c = 0; c < P::COLS; c++) {
                        TONY_HLS(UNROLL)
                        const int mg = mt * P::COLS + c, m = g * MG + mg;
                        if (mg < MG) {
                            const int i = P::PER_CHANNEL ? m : 0;
                            y[(m * P::OH + oh) * P::OW + ow] = (typename P::out_t)requant(
                                acc[c], mult[i], shift[i], P::ROUND, P::ZP, P::LO, P::HI);
                        }
                    }
                }
            }
        }
    }
}

// Dense (docs/arithmetic.md, 'MAC ops'): y = requant(x @ w + b), w is [K][M].
template <class P>
void dense(const typename P::in_t x[P::K], const typename P::w_t w[P::K * P::M],
           const typename P::b_t b[P::M], const int shift[], const int mult[], typename P::out_t y[P::M]) {
    const int KT = (P::K + P::ROWS - 1) / P::ROWS, MT = (P::M + P::COLS - 1) / P::COLS;
    typename P::acc_t acc[P::COLS];
    TONY_HLS(ARRAY_PARTITION variable=acc complete)
TONY_LOOP(dense_mtile)
    for (int mt = 0; mt < MT; mt++) {
    TONY_LOOP(dense_init)
        for (int c = 0; c < P::COLS; c++) {
            TONY_HLS(UNROLL)
            const int m = mt * P::COLS + c;
            acc[c] = (P::HAS_BIAS && m < P::M) ? (typename P::acc_t)b[m] : 0;
        }
    TONY_LOOP(dense_ktile)
        for (int kt = 0; kt < KT; kt++) {
            TONY_HLS(PIPELINE II=1)
        TONY_LOOP(dense_mac_col)
            for (int c = 0; c < P::COLS; c++) {
                TONY_HLS(UNROLL)
            TONY_LOOP(dense_mac_row)
                for (int r = 0; r < P::ROWS; r++) {
                    TONY_HLS(UNROLL)
                    const int k = kt * P::ROWS + r, m = mt * P::COLS + c;
                    if (k < P::K && m < P::M) {
                        const wide_t xv = (wide_t)x[k] - P::XZP;
                        const wide_t wv = (wide_t)w[k * P::M + m] - P::WZP;
                        acc[c] += (typename P::acc_t)(xv * wv);
                    }
                }
            }
        }
    TONY_LOOP(dense_store)
        for (int c = 0; c < P::COLS; c++) {
            TONY_HLS(UNROLL)
            const int m = mt * P::COLS + c;
            if (m < P::M) {
                const int i = P::PER_CHANNEL ? m : 0;
                y[m] = (typename P::out_t)requant(acc[c], mult[i], shift[i], P::ROUND, P::ZP, P::LO, P::HI);
            }
        }
    }
}

// Add (docs/arithmetic.md, 'Add'): align both inputs by exact left shifts (or multipliers),
// add exactly, requantize.
template <class P>
void add(const typename P::a_t a[P::N], const typename P::b_t b[P::N], typename P::out_t y[P::N]) {
TONY_LOOP(add_loop)
    for (int i = 0; i < P::N; i++) {
        TONY_HLS(PIPELINE II=1)
        const wide_t va = ((wide_t)a[i] - P::AZP) * P::MULT_A * (1LL << P::SHIFT_A);
        const wide_t vb = ((wide_t)b[i] - P::BZP) * P::MULT_B * (1LL << P::SHIFT_B);
        y[i] = (typename P::out_t)requant(va + vb, P::MULT, P::SHIFT, P::ROUND, P::ZP, P::LO, P::HI);
    }
}

// One input of a Concat: requantize x [OUTER][LEN][INNER] into y [OUTER][OUT_LEN][INNER] at OFFSET.
template <class P>
void concat_part(const typename P::in_t x[P::OUTER * P::LEN * P::INNER], typename P::out_t *y) {
TONY_LOOP(concat_outer)
    for (int o = 0; o < P::OUTER; o++) {
    TONY_LOOP(concat_inner)
        for (int i = 0; i < P::LEN * P::INNER; i++) {
            TONY_HLS(PIPELINE II=1)
            const wide_t v = (wide_t)x[o * P::LEN * P::INNER + i] - P::XZP;
            y[(o * P::OUT_LEN + P::OFFSET) * P::INNER + i] =
                (typename P::out_t)requant(v, P::MULT, P::SHIFT, P::ROUND, P::ZP, P::LO, P::HI);
        }
    }
}

// MaxPool (docs/arithmetic.md, 'Pooling'): max over the window, padding reads the dtype minimum;
// an optional requant follows (P::REQUANT).
template <class P>
void maxpool(const typename P::in_t x[P::C * P::H * P::W], typename P::out_t y[P::C * P::OH * P::OW]) {
TONY_LOOP(maxpool_chan)
    for (int c = 0; c < P::C; c++) {
    TONY_LOOP(maxpool_row)
        for (int oh = 0; oh < P::OH; oh++) {
        TONY_LOOP(maxpool_col)
            for (int ow = 0; ow < P::OW; ow++) {
                TONY_HLS(PIPELINE II=1)
                wide_t mx = P::PAD;
            TONY_LOOP(maxpool_win)
                for (int u = 0; u < P::KH; u++) {
                    for (int v = 0; v < P::KW; v++) {
                        const int iy = oh * P::SH - P::PT + u * P::DH, ix = ow * P::SW - P::PL + v * P::DW;
                        const bool in = iy >= 0 && iy < P::H && ix >= 0 && ix < P::W;
                        const wide_t val = in ? (wide_t)x[(c * P::H + iy) * P::W + ix] : (wide_t)P::PAD;
                        mx = val > mx ? val : mx;
                    }
                }
                y[(c * P::OH + oh) * P::OW + ow] = (typename P::out_t)(P::REQUANT
                    ? requant(mx - P::XZP, P::MULT, P::SHIFT, P::ROUND, P::ZP, P::LO, P::HI) : mx);
            }
        }
    }
}

// AvgPool (docs/arithmetic.md, 'Pooling'): exact window sum (padding counts as zero), then
// sum * MULT rounding-shifted by SHIFT, clamped.
template <class P>
void avgpool(const typename P::in_t x[P::C * P::H * P::W], typename P::out_t y[P::C * P::OH * P::OW]) {
TONY_LOOP(avgpool_chan)
    for (int c = 0; c < P::C; c++) {
    TONY_LOOP(avgpool_row)
        for (int oh = 0; oh < P::OH; oh++) {
        TONY_LOOP(avgpool_col)
            for (int ow = 0; ow < P::OW; ow++) {
                TONY_HLS(PIPELINE II=1)
                wide_t s = 0;
            TONY_LOOP(avgpool_win)
                for (int u = 0; u < P::KH; u++) {
                    for (int v = 0; v < P::KW; v++) {
                        const int iy = oh * P::SH - P::PT + u, ix = ow * P::SW - P::PL + v;
                        if (iy >= 0 && iy < P::H && ix >= 0 && ix < P::W)
                            s += (wide_t)x[(c * P::H + iy) * P::W + ix] - P::XZP;
                    }
                }
                y[(c * P::OH + oh) * P::OW + ow] =
                    (typename P::out_t)requant(s, P::MULT, P::SHIFT, P::ROUND, P::ZP, P::LO, P::HI);
            }
        }
    }
}

// Clamp: stand-alone activation / rescale, y = requant(x - zp).
template <class P>
void clamp_op(const typename P::in_t x[P::N], typename P::out_t y[P::N]) {
TONY_LOOP(clamp_loop)
    for (int i = 0; i < P::N; i++) {
        TONY_HLS(PIPELINE II=1)
        y[i] = (typename P::out_t)requant((wide_t)x[i] - P::XZP, P::MULT, P::SHIFT, P::ROUND, P::ZP, P::LO, P::HI);
    }
}

// Table: y = tab[t][x - XMIN] (docs/arithmetic.md, 'Tables'), t = 0 for one table, or the index
// along the table's axis (TABS tables of ENTRIES, INNER values per index in a sample).
template <class P>
void table_op(const typename P::in_t x[P::N], const typename P::t_t tab[P::TABS * P::ENTRIES],
              typename P::out_t y[P::N]) {
TONY_LOOP(table_loop)
    for (int i = 0; i < P::N; i++) {
        TONY_HLS(PIPELINE II=1)
        const int t = (i / P::INNER) % P::TABS;
        y[i] = (typename P::out_t)tab[t * P::ENTRIES + (int)((wide_t)x[i] - P::XMIN)];
    }
}

// Softmax (docs/transformer.md, 'Softmax'): per row of LEN elements (element k of row (o, i) at
// (o * LEN + k) * INNER + i), u = round_shift((max - q) * LOG2E, SHIFT), e = T[u mod 2^F] >>
// min(u >> F, TB + 1), R = 2^K / sum(e), y = clamp(round_shift(e * R, K - OUT_BITS), 0, 2^OUT_BITS - 1),
// saturated to the output type. e is computed twice, for the sum and for the outputs, as the
// accelerator's Softmax unit does.
template <class P>
wide_t softmax_exp(wide_t d, const typename P::t_t tab[1 << P::F]) {
    const wide_t u = rounding_shift(d * P::LOG2E, P::SHIFT, HALF_EVEN);
    const wide_t z = (u >> P::F) < P::TB + 1 ? (u >> P::F) : P::TB + 1;
    return (wide_t)tab[u & ((1 << P::F) - 1)] >> z;
}

template <class P>
void softmax_op(const typename P::in_t x[P::N], const typename P::t_t tab[1 << P::F], typename P::out_t y[P::N]) {
TONY_LOOP(softmax_outer)
    for (int o = 0; o < P::OUTER; o++) {
    TONY_LOOP(softmax_inner)
        for (int i = 0; i < P::INNER; i++) {
            const int base = o * P::LEN * P::INNER + i;
            wide_t mx = (wide_t)x[base];
        TONY_LOOP(softmax_max)
            for (int k = 1; k < P::LEN; k++) {
                TONY_HLS(PIPELINE II=1)
                const wide_t q = (wide_t)x[base + k * P::INNER];
                mx = q > mx ? q : mx;
            }
            wide_t sum = 0;
        TONY_LOOP(softmax_sum)
            for (int k = 0; k < P::LEN; k++) {
                TONY_HLS(PIPELINE II=1)
                sum += softmax_exp<P>(mx - (wide_t)x[base + k * P::INNER], tab);
            }
            const wide_t r = (1LL << P::K) / sum;
        TONY_LOOP(softmax_out)
            for (int k = 0; k < P::LEN; k++) {
                TONY_HLS(PIPELINE II=1)
                const wide_t e = softmax_exp<P>(mx - (wide_t)x[base + k * P::INNER], tab);
                const wide_t v = clamp(rounding_shift(e * r, P::K - P::OUT_BITS, HALF_EVEN), 0, (1LL << P::OUT_BITS) - 1);
                y[base + k * P::INNER] = (typename P::out_t)clamp(v, P::LO, P::HI);
            }
        }
    }
}

// LayerNorm (docs/transformer.md, 'LayerNorm'): per row of LEN elements (element k of row (o, i) at
// (o * LEN + k) * INNER + i), S1 = sum(q), S2 = sum(q^2), W = LEN S2 - S1^2, r = isqrt((W + E) << 2A)
// (Newton from 2^ceil(L/2), ITER steps, 0 for 0), R = 2^(A + RECIP) / r (0 when r = 0),
// v = round_shift((LEN q - S1) R, RECIP - F), y = clamp(round_shift(v g + b, SHIFT), LO, HI): the
// accelerator's LayerNorm unit's arithmetic, every value inside 64 bits.
template <class P>
wide_t layernorm_isqrt(wide_t m) {
    if (m <= 0) {
        return 0;
    }
    int len = 0;
TONY_LOOP(layernorm_bitlen)
    for (int b = 0; b < 63; b++) {
        if ((m >> b) != 0) {
            len = b + 1;
        }
    }
    wide_t x = 1LL << ((len + 1) >> 1);
TONY_LOOP(layernorm_newton)
    for (int s = 0; s < P::ITER; s++) {
        const wide_t nx = (x + m / x) >> 1;
        x = nx < x ? nx : x;
    }
    return x;
}

template <class P>
void layernorm_op(const typename P::in_t x[P::N], const typename P::g_t gamma[P::LEN],
                  const typename P::b_t beta[P::LEN], typename P::out_t y[P::N]) {
TONY_LOOP(layernorm_outer)
    for (int o = 0; o < P::OUTER; o++) {
    TONY_LOOP(layernorm_inner)
        for (int i = 0; i < P::INNER; i++) {
            const int base = o * P::LEN * P::INNER + i;
            wide_t s1 = 0, s2 = 0;
        TONY_LOOP(layernorm_sums)
            for (int k = 0; k < P::LEN; k++) {
                TONY_HLS(PIPELINE II=1)
                const wide_t q = (wide_t)x[base + k * P::INNER];
                s1 += q;
                s2 += q * q;
            }
            const wide_t w = (wide_t)P::LEN * s2 - s1 * s1;
            const wide_t r = layernorm_isqrt<P>((w + P::EPS) << (2 * P::A));
            const wide_t rr = r > 0 ? (1LL << (P::A + P::RECIP)) / r : 0;
        TONY_LOOP(layernorm_out)
            for (int k = 0; k < P::LEN; k++) {
                TONY_HLS(PIPELINE II=1)
                const wide_t d = (wide_t)P::LEN * (wide_t)x[base + k * P::INNER] - s1;
                const wide_t v = rounding_shift(d * rr, P::RECIP - P::F, HALF_EVEN);
                const wide_t t = v * (wide_t)gamma[k] + (wide_t)beta[k];
                y[base + k * P::INNER] = (typename P::out_t)clamp(rounding_shift(t, P::SHIFT, HALF_EVEN), P::LO, P::HI);
            }
        }
    }
}

// Reshape: the flat row-major order is unchanged, so it is a copy.
template <typename T, int N>
void reshape(const T x[N], T y[N]) {
TONY_LOOP(reshape_loop)
    for (int i = 0; i < N; i++) {
        TONY_HLS(PIPELINE II=1)
        y[i] = x[i];
    }
}

}  // namespace tony

#endif  // TONY_KERNELS_H
