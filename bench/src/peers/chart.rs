//! The latency chart: W1 (produce round trip) and W5 (end to end at 10k msg/s) per target,
//! latency (log scale) against percentile on a "nines" axis (0 = p0, 1 = p90, 2 = p99, 3 = p99.9).

use std::path::Path;

use anyhow::{anyhow, Context};
use plotters::prelude::*;

use super::{Sample, Target};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("chart: {e}")
}

/// (nines, µs) points of a sorted latency sample, up to p99.9.
fn curve(s: &Sample) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    let mut x = 0.0;
    while x <= 3.0 + 1e-9 {
        let p = 1.0 - 10f64.powf(-x);
        pts.push((x, f64::from(s.pct(p).max(1))));
        x += 0.05;
    }
    pts
}

pub(crate) fn draw(targets: &[Target], path: &Path) -> anyhow::Result<()> {
    // The bitmap backend draws text with a TrueType font registered at run time (fonts-dejavu-core).
    let bytes =
        std::fs::read(FONT).with_context(|| format!("chart: reading {FONT} (apt-get install fonts-dejavu-core)"))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| anyhow!("chart: bad font"))?;

    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
    ];
    for (panel, (w, title)) in panels.iter().zip([
        (0usize, "W1: produce round trip, one connection, one at a time"),
        (4, "W5: end to end at 10k msg/s, open loop"),
    ]) {
        let curves: Vec<(&Target, Vec<(f64, f64)>)> = targets
            .iter()
            .filter_map(|t| t.w[w].as_ref().filter(|s| !s.lat_us.is_empty()).map(|s| (t, curve(s))))
            .collect();
        let max = curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.1)).fold(10.0, f64::max);
        let min = curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.1)).fold(max, f64::min).max(1.0);
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..3f64, (min * 0.8..max * 1.25).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (µs, log scale)")
            .x_labels(4)
            .x_label_formatter(&|x| match x.round() as i32 {
                0 => "p0".to_owned(),
                1 => "p90".to_owned(),
                2 => "p99".to_owned(),
                _ => "p99.9".to_owned(),
            })
            .y_label_formatter(&|y| if *y >= 1000.0 { format!("{:.0} ms", y / 1000.0) } else { format!("{y:.0} µs") })
            .draw()
            .map_err(err)?;
        for (i, (t, c)) in curves.into_iter().enumerate() {
            let color = colors[targets.iter().position(|x| std::ptr::eq(x, t)).unwrap_or(i) % colors.len()];
            chart
                .draw_series(LineSeries::new(c, color.stroke_width(2)))
                .map_err(err)?
                .label(t.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
