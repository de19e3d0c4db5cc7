/* cyconv_winograd.h -- the 1-D Winograd transforms of _winograd.pyx, in C.
 *
 * Design:
 * - Each transform maps k values of every item of a run to j values
 *   (F(4x4, 3x3): B^T 6 -> 6, A^T 6 -> 4, A 4 -> 6; F(2x2, 3x3): 4 -> 4,
 *   4 -> 2, 2 -> 4).  The loop runs over the items, so that the compiler
 *   vectorises across them.  The innermost kernels take one restrict pointer
 *   per input and output row: without restrict GCC must check every
 *   input/output pair for overlap at run time, gives up past ten pairs, and
 *   the loops stay scalar (measured: two thirds of a float32 forward).
 * - "cols" variants read value i of item t at s[i * ss + t] and write output
 *   j at d[j * ds + t] (a run of pixels, or of tiles).  "row" variants work
 *   along one row of pixels whose tiles start every m pixels: the input
 *   transform first splits the row into m unit-stride phases (scratch P),
 *   so that the overlapping reads of neighbouring tiles become unit-stride
 *   reads of P; the output transform writes its m pixels per tile with
 *   interleaved stores straight into the output row, plus the bias.
 * - The arithmetic of every output, operand by operand, is that of the
 *   scalar definition (the project builds with -ffp-contract=off):
 *   vectorising changes no bit, and the results are the same for every
 *   run length and CPU variant of the same build flags.
 * - Instantiated once per dtype by cyconv_winograd_impl.h (CW_T, CW_SFX:
 *   _s float, _d double), the same C-macro scheme as cyconv_gemm.h;
 *   _winograd.pyx reaches the two through fused inline wrappers.
 */
#ifndef CYCONV_WINOGRAD_H
#define CYCONV_WINOGRAD_H

#include <stddef.h>

#if defined(__GNUC__)
#define CW_RESTRICT __restrict__
#else
#define CW_RESTRICT
#endif

#define CW_T float
#define CW_SFX(name) name##_s
#include "cyconv_winograd_impl.h"
#undef CW_T
#undef CW_SFX

#define CW_T double
#define CW_SFX(name) name##_d
#include "cyconv_winograd_impl.h"
#undef CW_T
#undef CW_SFX

#endif /* CYCONV_WINOGRAD_H */
