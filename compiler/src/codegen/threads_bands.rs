//! Threads for a batch of one image (generated code, `Split::Bands`). A batch-1 convolution has
//! no samples to share (`threads`), so it is cut into horizontal bands of output rows, one per
//! thread: each band is the conv of the input rows it reads (its halo included), padded above
//! only if it is the top band and below only if it is the bottom one, so a band is an ordinary
//! conv template of its own geometry (`<name>_band<i>`). Its input is a contiguous run of
//! image rows and its outputs a contiguous run of output rows (pooled rows when a max-pool is
//! fused: bands are cut between pool windows), so the wrapper passes plain sub-slices, as for
//! samples. Each value is computed by the same template code it would be on one thread, so the
//! results do not depend on the thread count.
//!
//! Batch-1 convs with BN statistics (a training step at batch 1) stay on one thread.

use std::ops::Range;

use crate::ir::Pad2d;
use crate::kernel_ir::schedule::gcd;
use crate::kernel_ir::{ConvGeom, KernelOp};

use super::kernels::{operand_names, scratch_of};
use super::threads::SPAWN_FLOPS;
use super::writer::Code;

/// One thread's band of a batch-1 conv.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Band {
    /// The conv of the band's input rows.
    pub part: KernelOp,
    /// First value of the image `x` the band reads.
    pub x_offset: usize,
    /// Its output rows, in units of whole pool windows' rows when a max-pool is fused (and of
    /// whole rows of Winograd tiles with a prepared kernel).
    pub units: Range<usize>,
}

/// Bands of a batch-1 conv `op` for `threads` threads, when it has them: no BN statistics,
/// enough work to wake a thread, and at least a unit of output rows per thread.
pub(crate) fn band_split(op: &KernelOp, threads: usize) -> Option<Vec<Band>> {
    let KernelOp::Conv2d {
        geom: g,
        epilogue: e,
        winograd_u,
    } = op
    else {
        return None;
    };
    if threads < 2 || g.n != 1 || e.bn_stats || op.flops() < SPAWN_FLOPS {
        return None;
    }
    // A fused pool tiles the map (`pool_tiles`): a unit is one window's rows; with a prepared
    // Winograd kernel, also whole rows of tiles (the bands run that tile too).
    let pool_rows = e.max_pool.map_or(1, |w| w.size[0]);
    let side = winograd_u.map_or(1, |t| t.side());
    let unit = pool_rows / gcd(pool_rows, side) * side;
    let units = g.out_hw[0] / unit;
    if units < threads || units * unit != g.out_hw[0] {
        return None;
    }
    let bands: Vec<Band> = (0..threads)
        .map(|t| {
            let u = t * units / threads..(t + 1) * units / threads;
            let (geom, first_row) = band_geom(g, u.start * unit..u.end * unit);
            Band {
                part: KernelOp::Conv2d {
                    geom,
                    epilogue: *e,
                    winograd_u: *winograd_u,
                },
                x_offset: first_row * g.in_hw[1] * g.c,
                units: u,
            }
        })
        .collect();
    // The last band runs on the calling thread, in the whole's scratch (the others in their
    // pool thread's buffer): it must fit.
    let fits = match (scratch_of(&bands[threads - 1].part), scratch_of(op)) {
        (Some(p), Some(w)) => p.1 <= w.1,
        (Some(_), None) => false,
        (None, _) => true,
    };
    fits.then_some(bands)
}

/// The conv computing output rows `rows` of `g` (one image), and the first input row it reads:
/// the input rows under those outputs' windows, with the image's padding only where a window
/// reaches past its top or bottom.
fn band_geom(g: &ConvGeom, rows: Range<usize>) -> (ConvGeom, usize) {
    let (s, kh, h) = (g.strides[0] as isize, g.kernel_hw[0] as isize, g.in_hw[0] as isize);
    let top = rows.start as isize * s - g.pad.top as isize;
    let bottom = (rows.end as isize - 1) * s - g.pad.top as isize + kh;
    let (first, end) = (top.max(0), bottom.min(h));
    let geom = ConvGeom {
        n: 1,
        in_hw: [(end - first) as usize, g.in_hw[1]],
        pad: Pad2d {
            top: (first - top) as usize,
            bottom: (bottom - end) as usize,
            ..g.pad
        },
        out_hw: [rows.len(), g.out_hw[1]],
        ..*g
    };
    (geom, first as usize)
}

/// The body of a batch-1 conv `whole` run as `bands` (functions `<part>{i}`): every band but
/// the last on the crate's pool threads, the last on the calling thread.
pub(crate) fn emit_band_wrapper(c: &mut Code, whole: &KernelOp, bands: &[Band], part: &str) -> Result<(), String> {
    let KernelOp::Conv2d { geom: g, .. } = whole else {
        return Err("only a conv splits into bands".into());
    };
    let (in_names, out_names) = operand_names(whole)?;
    let (_, wout) = whole.operand_sizes();
    let units = bands.last().map_or(0, |b| b.units.end);
    let last = bands.len() - 1;
    c.line(format!(
        "// {} threads, each {part}<i> on a band of the image's output rows",
        bands.len()
    ));
    // Each output cut into the bands' runs of rows.
    for (name, &len) in out_names.iter().zip(&wout) {
        let per_unit = len / units;
        c.line(format!("let {name}_r = &mut {name}[..];"));
        for (i, b) in bands.iter().enumerate().take(last) {
            c.line(format!(
                "let ({name}_{i}, {name}_r) = {name}_r.split_at_mut({});",
                b.units.len() * per_unit
            ));
        }
        c.line(format!("let {name}_{last} = {name}_r;"));
    }
    // Band `i`'s arguments: its image rows, the whole weights and bias, its residual rows.
    let row_len = g.out_hw[1] * g.f;
    let unit_rows = g.out_hw[0] / units;
    let args = |i: usize, b: &Band| -> Vec<String> {
        let mut a: Vec<String> = in_names
            .iter()
            .map(|n| match n.as_str() {
                "x" => format!("at(x, {})", b.x_offset),
                "res" => format!("at(res, {})", b.units.start * unit_rows * row_len),
                _ => n.clone(),
            })
            .collect();
        a.extend(out_names.iter().map(|n| format!("at_mut({n}_{i}, 0)")));
        a
    };
    let scratch = scratch_of(whole).filter(|_| scratch_of(&bands[last].part).is_some());
    c.line(format!("let mut shares: Vec<Share<'_>> = Vec::with_capacity({last});"));
    for (i, b) in bands.iter().enumerate().take(last) {
        let mut a = args(i, b);
        let s = match scratch_of(&b.part) {
            Some((_, len)) => {
                a.push(format!("share_scratch::<{len}>(s)"));
                "s"
            }
            None => "_",
        };
        c.line(format!(
            "shares.push(Box::new(move |{s}: &mut Vec<f32>| {part}{i}({})));",
            a.join(", ")
        ));
    }
    let mut a = args(last, &bands[last]);
    if let Some((name, _)) = scratch {
        a.push(format!("at_mut({name}, 0)"));
    }
    c.line(format!("run_shares(shares, || {part}{last}({}));", a.join(", ")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Activation, Window2d};
    use crate::kernel_ir::schedule::WinogradTile;
    use crate::kernel_ir::Epilogue;

    fn conv(in_hw: usize, k: usize, stride: usize, pad: usize, e: Epilogue) -> KernelOp {
        let out = (in_hw + 2 * pad - k) / stride + 1;
        KernelOp::Conv2d {
            geom: ConvGeom {
                n: 1,
                in_hw: [in_hw, in_hw],
                c: 64,
                kernel_hw: [k, k],
                f: 64,
                strides: [stride, stride],
                pad: Pad2d {
                    top: pad,
                    bottom: pad,
                    left: pad,
                    right: pad,
                },
                out_hw: [out, out],
            },
            epilogue: e,
            winograd_u: None,
        }
    }

    fn geom(op: &KernelOp) -> ConvGeom {
        let KernelOp::Conv2d { geom, .. } = op else { panic!() };
        *geom
    }

    #[test]
    fn a_padded_conv_splits_into_a_top_and_a_bottom_band_with_their_halos() {
        let bands = band_split(&conv(32, 3, 1, 1, Epilogue::NONE), 2).expect("bands");
        let (top, bottom) = (geom(&bands[0].part), geom(&bands[1].part));
        // Output rows 0..16 read input rows 0..17 (padded above); rows 16..32 read 15..32.
        assert_eq!(
            (top.in_hw, top.pad.top, top.pad.bottom, top.out_hw),
            ([17, 32], 1, 0, [16, 32])
        );
        assert_eq!((bottom.in_hw, bottom.pad.top, bottom.pad.bottom), ([17, 32], 0, 1));
        assert_eq!((bands[0].x_offset, bands[1].x_offset), (0, 15 * 32 * 64));
        assert_eq!((bands[0].units.clone(), bands[1].units.clone()), (0..16, 16..32));
    }

    #[test]
    fn strided_and_pooled_convs_cut_between_windows() {
        // 3×3 stride 2, pad 1 (ResNet's downsampling): output rows 8..16 read 15..32.
        let bands = band_split(&conv(32, 3, 2, 1, Epilogue::NONE), 2).expect("bands");
        let b = geom(&bands[1].part);
        assert_eq!((b.in_hw[0], b.pad.top, b.pad.bottom, b.out_hw[0]), (17, 0, 0, 8));
        assert_eq!(bands[1].x_offset, 15 * 32 * 64);
        let pooled = Epilogue {
            act: Activation::Relu,
            max_pool: Some(Window2d {
                size: [2, 2],
                strides: [2, 2],
                pad: Pad2d::default(),
            }),
            ..Epilogue::NONE
        };
        let bands = band_split(&conv(16, 3, 1, 1, pooled), 2).expect("pooled bands");
        assert_eq!(bands[1].units, 4..8);
        assert_eq!(geom(&bands[1].part).out_hw, [8, 16]);
    }

    #[test]
    fn a_prepared_winograd_kernel_cuts_bands_between_rows_of_its_tiles() {
        let pooled = Epilogue {
            max_pool: Some(Window2d {
                size: [2, 2],
                strides: [2, 2],
                pad: Pad2d::default(),
            }),
            ..Epilogue::NONE
        };
        let mut op = conv(24, 3, 1, 1, pooled);
        if let KernelOp::Conv2d { winograd_u, .. } = &mut op {
            *winograd_u = Some(WinogradTile::F4);
        }
        // Units of 4 rows (2-row pool windows, 4-row tiles): 6 units, 3 a band.
        let bands = band_split(&op, 2).expect("bands");
        assert_eq!((bands[0].units.clone(), bands[1].units.clone()), (0..3, 3..6));
        assert_eq!(geom(&bands[1].part).out_hw, [12, 24]);
        assert!(matches!(
            bands[1].part,
            KernelOp::Conv2d {
                winograd_u: Some(WinogradTile::F4),
                ..
            }
        ));
    }

    #[test]
    fn batches_statistics_and_small_convs_do_not_split_into_bands() {
        let stats = Epilogue {
            bn_stats: true,
            ..Epilogue::NONE
        };
        assert!(band_split(&conv(32, 3, 1, 1, stats), 2).is_none());
        assert!(
            band_split(&conv(8, 3, 1, 1, Epilogue::NONE), 2).is_none(),
            "too little work"
        );
        assert!(band_split(&conv(32, 3, 1, 1, Epilogue::NONE), 1).is_none());
        let mut batch = conv(32, 3, 1, 1, Epilogue::NONE);
        if let KernelOp::Conv2d { geom, .. } = &mut batch {
            geom.n = 2;
        }
        assert!(band_split(&batch, 2).is_none(), "samples split instead");
    }
}
