//! Convolution forward, input gradient and kernel gradient against naive loops: odd shapes,
//! strides 1 and 2, valid / TF SAME (asymmetric at stride 2) / explicit padding, 1×1, channel
//! counts that are not multiples of the vector width, batch 1; every ISA, 1 and 2 threads, and
//! bit-identical results across thread counts.

mod kernels_common;
mod support;

use cnnc_runtime::kernels::{
    conv2d_forward, conv2d_forward_packed, conv2d_grad_input, conv2d_grad_kernel, Act, ConvGeom, Ctx, Epilogue,
    KernelIsa, PackedB, Pad,
};
use kernels_common::{conv_grad_input_ref, conv_grad_kernel_ref, conv_ref, conv_tol, data, isas, pools, KERNEL_TOL};
use support::assert_close;

/// The geometries every kernel is checked on.
fn geoms() -> Vec<ConvGeom> {
    vec![
        ConvGeom::same(2, [7, 9], 3, [3, 3], 5, [1, 1]),
        ConvGeom::same(1, [9, 8], 17, [3, 3], 33, [2, 2]),
        ConvGeom::valid(2, [10, 6], 4, [3, 3], 40, [1, 1]),
        ConvGeom::valid(1, [11, 11], 2, [5, 5], 7, [2, 2]),
        ConvGeom::valid(3, [5, 5], 19, [1, 1], 37, [1, 1]),
        ConvGeom::same(2, [7, 7], 8, [1, 1], 16, [2, 2]),
        ConvGeom::same(1, [14, 14], 32, [3, 3], 64, [1, 1]),
        ConvGeom::same(2, [9, 7], 5, [3, 1], 9, [2, 1]),
        ConvGeom::same(1, [6, 6], 64, [3, 3], 35, [1, 1]),
        ConvGeom::same(1, [8, 8], 1, [3, 3], 32, [1, 1]),
        // Padding wider than the kernel (the input gradient cannot gather through it).
        ConvGeom::new(
            1,
            [4, 5],
            3,
            [3, 3],
            6,
            [1, 1],
            Pad {
                top: 3,
                bottom: 0,
                left: 1,
                right: 2,
            },
        ),
        // Output rows of 7+ pixels take the direct (im2col-free) path: stride 2 with TF's
        // asymmetric SAME split, more channels than one K chunk, several images per block,
        // rectangular kernels, padding wider than the kernel.
        ConvGeom::same(2, [15, 16], 6, [3, 3], 20, [2, 2]),
        ConvGeom::same(1, [7, 8], 300, [3, 3], 17, [1, 1]),
        ConvGeom::valid(3, [9, 12], 7, [2, 3], 11, [1, 1]),
        ConvGeom::new(
            2,
            [5, 9],
            3,
            [3, 3],
            8,
            [1, 2],
            Pad {
                top: 3,
                bottom: 1,
                left: 2,
                right: 4,
            },
        ),
        ConvGeom::same(4, [10, 10], 16, [5, 5], 48, [1, 1]),
        // Output rows narrower than 4 (im2col paths everywhere).
        ConvGeom::same(3, [3, 2], 10, [3, 3], 12, [1, 1]),
        // Big enough for several row blocks and pixel chunks even on one thread.
        ConvGeom::same(2, [32, 32], 64, [3, 3], 40, [1, 1]),
        // At most 64 output pixels and whole 32-wide panels: the forward reads the kernel in
        // place, unpacked (direct path, im2col path, strided 1×1).
        ConvGeom::same(1, [8, 8], 24, [3, 3], 64, [1, 1]),
        ConvGeom::same(1, [4, 4], 40, [3, 3], 96, [1, 1]),
        ConvGeom::same(1, [8, 8], 16, [1, 1], 64, [2, 2]),
        // A strided 1×1 whose last input row and column no output reads, with output rows of a
        // whole row tile (its input gradient writes the read pixels straight from the GEMM and
        // zeroes the rest).
        ConvGeom::valid(2, [8, 31], 16, [1, 1], 32, [3, 2]),
    ]
}

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn same_padding_follows_tensorflow() {
    assert_eq!(Pad::same_1d(8, 3, 2), (0, 1));
    assert_eq!(Pad::same_1d(7, 3, 2), (1, 1));
    assert_eq!(Pad::same_1d(28, 3, 1), (1, 1));
    assert_eq!(Pad::same_1d(6, 1, 2), (0, 0));
    assert_eq!(Pad::same_1d(32, 4, 1), (1, 2));
    let g = ConvGeom::same(1, [32, 32], 64, [3, 3], 128, [2, 2]);
    assert_eq!(
        (g.oh, g.ow, g.pad),
        (
            16,
            16,
            Pad {
                top: 0,
                bottom: 1,
                left: 0,
                right: 1
            }
        )
    );
    assert_eq!(ConvGeom::valid(1, [2, 2], 1, [3, 3], 1, [1, 1]).oh, 0);
}

#[test]
fn conv_forward_matches_reference() {
    for g in geoms() {
        let (x, w) = (data(g.input_len(), 1), data(g.kernel_len(), 2));
        let expected = conv_ref(&g, &x, &w);
        for isa in isas() {
            let mut first: Option<Vec<f32>> = None;
            for pool in pools() {
                let ctx = Ctx::with_isa(&pool, isa);
                let mut y = vec![f32::NAN; g.output_len()];
                conv2d_forward(&ctx, &g, &x, &w, Epilogue::none(), &mut y);
                let what = format!("forward {g:?} {isa:?} threads={}", pool.threads());
                assert_close(&y, &expected, conv_tol(isa, &g), &what);
                match &first {
                    None => first = Some(y),
                    Some(f) => assert!(bits_equal(f, &y), "{what}: differs across thread counts"),
                }
            }
        }
    }
}

#[test]
fn conv_forward_epilogue_bias_activation_moments_and_packed_kernel() {
    for g in geoms() {
        let (x, w, bias) = (data(g.input_len(), 3), data(g.kernel_len(), 4), data(g.f, 5));
        let r = conv_ref(&g, &x, &w);
        for act in [Act::Relu, Act::Tanh] {
            let expected: Vec<f32> = r
                .iter()
                .enumerate()
                .map(|(i, &v)| act.apply(v + bias[i % g.f]))
                .collect();
            let f = g.f;
            let mut mref = vec![0f32; 2 * f];
            let rows = expected.len() / f;
            for j in 0..f {
                let mean = (0..rows).map(|i| expected[i * f + j] as f64).sum::<f64>() / rows as f64;
                let var = (0..rows)
                    .map(|i| (expected[i * f + j] as f64 - mean).powi(2))
                    .sum::<f64>()
                    / rows as f64;
                mref[j] = mean as f32;
                mref[f + j] = var as f32;
            }
            for isa in isas() {
                let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
                for pool in pools() {
                    let ctx = Ctx::with_isa(&pool, isa);
                    let packed = PackedB::from_matrix(isa, g.k(), g.f, &w, false);
                    let mut y = vec![f32::NAN; g.output_len()];
                    let mut moments = vec![f32::NAN; 2 * f];
                    let epi = Epilogue::none()
                        .with_bias(&bias)
                        .with_act(act)
                        .with_moments(&mut moments);
                    conv2d_forward_packed(&ctx, &g, &x, &packed, epi, &mut y);
                    let what = format!("fused {act:?} {g:?} {isa:?} threads={}", pool.threads());
                    assert_close(&y, &expected, conv_tol(isa, &g), &what);
                    assert_close(&moments, &mref, conv_tol(isa, &g), &format!("moments of {what}"));
                    match &first {
                        None => first = Some((y, moments)),
                        Some((fy, fm)) => {
                            assert!(
                                bits_equal(fy, &y) && bits_equal(fm, &moments),
                                "{what}: differs across threads"
                            )
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn conv_grad_input_matches_reference() {
    for g in geoms() {
        let (dy, w) = (data(g.output_len(), 6), data(g.kernel_len(), 7));
        let expected = conv_grad_input_ref(&g, &dy, &w);
        for isa in isas() {
            let mut first: Option<Vec<f32>> = None;
            for pool in pools() {
                let ctx = Ctx::with_isa(&pool, isa);
                let mut dx = vec![f32::NAN; g.input_len()];
                conv2d_grad_input(&ctx, &g, &dy, &w, &mut dx);
                let what = format!("grad input {g:?} {isa:?} threads={}", pool.threads());
                assert_close(&dx, &expected, conv_tol(isa, &g), &what);
                match &first {
                    None => first = Some(dx),
                    Some(f) => assert!(bits_equal(f, &dx), "{what}: differs across thread counts"),
                }
            }
        }
    }
}

#[test]
fn conv_grad_kernel_and_bias_match_reference() {
    for g in geoms() {
        let (x, dy) = (data(g.input_len(), 8), data(g.output_len(), 9));
        let expected = conv_grad_kernel_ref(&g, &x, &dy);
        let mut bias_ref = vec![0f64; g.f];
        for (i, &v) in dy.iter().enumerate() {
            bias_ref[i % g.f] += v as f64;
        }
        let bias_ref: Vec<f32> = bias_ref.into_iter().map(|v| v as f32).collect();
        for isa in isas() {
            let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
            for pool in pools() {
                let ctx = Ctx::with_isa(&pool, isa);
                let mut dw = vec![f32::NAN; g.kernel_len()];
                let mut db = vec![f32::NAN; g.f];
                conv2d_grad_kernel(&ctx, &g, &x, &dy, &mut dw, Some(&mut db));
                let what = format!("grad kernel {g:?} {isa:?} threads={}", pool.threads());
                assert_close(&dw, &expected, conv_tol(isa, &g), &what);
                assert_close(&db, &bias_ref, KERNEL_TOL, &format!("bias {what}"));
                let mut dw2 = vec![f32::NAN; g.kernel_len()];
                conv2d_grad_kernel(&ctx, &g, &x, &dy, &mut dw2, None);
                assert!(bits_equal(&dw, &dw2), "{what}: the bias gradient changed dw");
                match &first {
                    None => first = Some((dw, db)),
                    Some((fw, fb)) => {
                        assert!(
                            bits_equal(fw, &dw) && bits_equal(fb, &db),
                            "{what}: differs across thread counts"
                        )
                    }
                }
            }
        }
    }
}

#[test]
fn isa_detection_is_consistent() {
    let all = KernelIsa::all_supported();
    assert_eq!(all.first().copied(), Some(KernelIsa::detect()));
    assert_eq!(all.last().copied(), Some(KernelIsa::Portable));
    for isa in [KernelIsa::Avx512, KernelIsa::Avx2, KernelIsa::Portable] {
        assert!(isa.checked().supported());
    }
}
