//! SVG line charts and HTML escaping for the reports of `lax bench sweep` and `lax soak`.

use std::fmt::Write as _;

/// Colours of the series of a chart, in order.
pub(crate) const SERIES_COLORS: [&str; 4] = ["#1f6feb", "#d1731f", "#2da44e", "#8250df"];

/// At most this many x labels (and marked points) per chart.
const MAX_X_LABELS: usize = 12;

/// `text` safe inside HTML or SVG text and attributes.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A y axis scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    /// From 0 to a round maximum.
    Linear,
    /// Decades.
    Log,
}

/// An SVG line chart of named series over categorical x values, equally spaced (concurrencies
/// growing by powers, or samples taken at a steady pace); `x_title` names the x axis. With
/// many x values only every n-th is labelled, and points are not marked.
pub(crate) fn line_chart(
    title: &str,
    x_title: &str,
    x: &[String],
    series: &[(&str, Vec<f64>)],
    scale: Scale,
) -> String {
    const WIDTH: f64 = 460.0;
    const HEIGHT: f64 = 300.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 15.0;
    const TOP: f64 = 30.0;
    const BOTTOM: f64 = 45.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let values = series.iter().flat_map(|(_, v)| v.iter().copied());
    let highest = values
        .clone()
        .fold(f64::MIN, f64::max)
        .max(f64::MIN_POSITIVE);
    let lowest = values.fold(f64::MAX, f64::min).max(0.01);
    // The y range and its gridlines, as (value, label).
    let (y_lo, y_hi, ticks): (f64, f64, Vec<f64>) = match scale {
        Scale::Linear => {
            let step = nice_step(highest / 4.0);
            let top = (highest / step).ceil().max(1.0) * step;
            let ticks = (0..=((top / step).round() as u32))
                .map(|i| f64::from(i) * step)
                .collect();
            (0.0, top, ticks)
        }
        Scale::Log => {
            let lo = lowest.log10().floor();
            let hi = highest.log10().ceil().max(lo + 1.0);
            let ticks = ((lo as i32)..=(hi as i32)).map(|d| 10f64.powi(d)).collect();
            (lo, hi, ticks)
        }
    };
    let to_axis = |v: f64| match scale {
        Scale::Linear => v,
        Scale::Log => v.max(0.01).log10(),
    };
    let py = |v: f64| TOP + (y_hi - to_axis(v)) / (y_hi - y_lo).max(f64::EPSILON) * plot_h;
    let px = |i: usize| match x.len() {
        0 | 1 => LEFT + plot_w / 2.0,
        n => LEFT + i as f64 / (n - 1) as f64 * plot_w,
    };
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">
<text x="{:.1}" y="16" text-anchor="middle" font-size="13">{}</text>
<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#999"/>
"##,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    for tick in ticks {
        let y = py(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 5.0,
            y + 4.0,
            axis_label(tick)
        );
    }
    let label_every = x.len().div_ceil(MAX_X_LABELS).max(1);
    for (i, label) in x.iter().enumerate().step_by(label_every) {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            px(i),
            TOP + plot_h + 16.0,
            escape(label)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        escape(x_title)
    );
    for (index, (name, values)) in series.iter().enumerate() {
        let color = SERIES_COLORS[index % SERIES_COLORS.len()];
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| format!("{:.1},{:.1}", px(i), py(v)))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"##,
            points.join(" ")
        );
        for point in points.iter().filter(|_| x.len() <= MAX_X_LABELS) {
            let (cx, cy) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                svg,
                r##"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"##
            );
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            LEFT + 8.0,
            TOP + 8.0 + 16.0 * index as f64,
            LEFT + 22.0,
            TOP + 17.0 + 16.0 * index as f64,
            escape(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A round step (1, 2 or 5 × 10ⁿ) of at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// `250k`, `1.5M`, `0.1`, `100`.
fn axis_label(value: f64) -> String {
    if value >= 1e6 {
        format!("{}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{}k", value / 1e3)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linear_chart_scales_from_zero_to_a_round_top() {
        let x = ["1".to_owned(), "16".to_owned()];
        let svg = line_chart(
            "t",
            "publishes in flight",
            &x,
            &[("LAX", vec![0.0, 180_000.0])],
            Scale::Linear,
        );
        // Ticks every 50k up to 200k; the first point sits on the bottom edge (y = 255).
        assert!(svg.contains(">200k<") && svg.contains(">50k<"), "{svg}");
        assert!(svg.contains("points=\"70.0,255.0 445.0,"), "{svg}");
        assert!(svg.contains(">publishes in flight<"), "{svg}");
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(45_000.0), 50_000.0);
        assert_eq!(nice_step(0.0), 1.0);
    }

    #[test]
    fn long_series_get_a_few_labels_and_no_markers() {
        let x: Vec<String> = (0..300).map(|i| format!("{i} s")).collect();
        let svg = line_chart(
            "RSS",
            "time",
            &x,
            &[("broker", (0..300).map(f64::from).collect())],
            Scale::Linear,
        );
        assert!(svg.contains(">0 s<") && svg.contains(">25 s<") && !svg.contains(">1 s<"));
        assert!(!svg.contains("<circle"), "no markers on 300 points");
        assert_eq!(escape("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
    }
}
