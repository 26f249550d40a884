//! Training curves as the seeds draw them: loss and accuracy per epoch, training and
//! validation, side by side. `.svg` or `.png` by the file's extension.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::error::CliError;

/// Per-epoch series to draw; validation series may be empty.
pub struct Curves<'a> {
    pub loss: &'a [f32],
    pub accuracy: &'a [f32],
    pub val_loss: &'a [f32],
    pub val_accuracy: &'a [f32],
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, train: &[f32], val: &[f32]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let all = train.iter().chain(val).copied().filter(|v| v.is_finite());
    let (lo, hi) = all.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let margin = ((hi - lo) * 0.1).max(1e-3);
    let epochs = train.len().max(val.len()).max(2) as f32;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(1f32..epochs, (lo - margin)..(hi + margin))?;
    chart.configure_mesh().x_desc("epoch").y_desc(title).draw()?;
    let series = |v: &[f32]| {
        v.iter()
            .enumerate()
            .map(|(i, &y)| (i as f32 + 1.0, y))
            .collect::<Vec<_>>()
    };
    for (v, color) in [(train, BLUE), (val, RED)] {
        chart.draw_series(series(v).into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .draw_series(LineSeries::new(series(train), BLUE.stroke_width(2)))?
        .label(format!("training {title}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE));
    if !val.is_empty() {
        chart
            .draw_series(LineSeries::new(series(val), RED.stroke_width(2)))?
            .label(format!("validation {title}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    Ok(())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Curves) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
    panel(&left, "loss", c.loss, c.val_loss)?;
    panel(&right, "accuracy", c.accuracy, c.val_accuracy)?;
    root.present()?;
    Ok(())
}

/// Refuses a file name that is neither `.png` nor `.svg` (checked before training starts).
pub fn check_extension(path: &Path) -> Result<(), CliError> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("png" | "svg") => Ok(()),
        _ => Err(CliError::new(format!(
            "--plot {}: use a .png or .svg file name",
            path.display()
        ))),
    }
}

/// DejaVu Sans, shipped so that PNG text renders on machines without system fonts.
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Writes the curves to `path` (`.svg` or `.png`).
pub fn write(path: &Path, c: &Curves) -> Result<(), CliError> {
    // Registering twice is harmless; a failure only loses the text of PNG files.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    let size = (1000, 400);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    // Drawn beside `path` and renamed over it: an interrupted or failed draw leaves the old plot
    // (or none), never a torn one. The temporary name keeps the extension plotters reads.
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp.{}.{ext}", std::process::id()));
    let res = match ext.as_str() {
        "svg" => draw(SVGBackend::new(&tmp, size).into_drawing_area(), c),
        "png" => draw(BitMapBackend::new(&tmp, size).into_drawing_area(), c),
        _ => {
            return Err(CliError::new(format!(
                "--plot {}: use a .png or .svg file name",
                path.display()
            )))
        }
    };
    let res = res
        .map_err(|e| e.to_string())
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(|e| CliError::new(format!("cannot draw {}: {e}", path.display())))
}
