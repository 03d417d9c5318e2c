//! SVG charts of benchmark results, drawn from measured figures by ns-bench and vm-chart.

/// One bar: its name and its segments (label, µs), in order.
pub type Bar = (String, Vec<(String, u64)>);

/// Horizontal stacked bars on one linear scale: each bar a name and its segments (label, µs), the
/// segment's label and value in its tooltip, the bar's sum written after it, and a legend of every
/// segment label in order of first appearance.
pub fn stacked_bars(title: &str, bars: &[Bar]) -> String {
    let max = bars.iter().map(|(_, s)| s.iter().map(|x| x.1).sum::<u64>()).max().unwrap_or(1).max(1);
    let (left, width, bar_h, gap) = (90.0, 620.0, 34.0, 70.0);
    let height = 60.0 + gap * bars.len() as f64 + 60.0;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"13\">{}</text>\n",
        esc(title)
    );
    let mut legend: Vec<&str> = Vec::new();
    for (i, (name, segs)) in bars.iter().enumerate() {
        let y = 50.0 + gap * i as f64;
        let total: u64 = segs.iter().map(|s| s.1).sum();
        o += &format!("<text x=\"10\" y=\"{}\">{}</text>\n", y + bar_h / 2.0 + 4.0, esc(name));
        let mut x = left;
        for (seg, us) in segs {
            let w = width * *us as f64 / max as f64;
            o += &format!(
                "<rect x=\"{x:.2}\" y=\"{y}\" width=\"{w:.2}\" height=\"{bar_h}\" fill=\"{}\"><title>{} {} ms</title></rect>\n",
                colour(seg),
                esc(seg),
                ms(*us)
            );
            x += w;
            if !legend.contains(&seg.as_str()) {
                legend.push(seg);
            }
        }
        o += &format!("<text x=\"{:.2}\" y=\"{}\">{} ms</text>\n", (x + 6.0).min(690.0), y + bar_h + 14.0, ms(total));
    }
    let ly = 50.0 + gap * bars.len() as f64 + 10.0;
    let mut lx = 10.0;
    for seg in legend {
        o += &format!(
            "<rect x=\"{lx}\" y=\"{ly}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
            colour(seg),
            lx + 16.0,
            ly + 10.0,
            esc(seg)
        );
        lx += 22.0 + 7.0 * seg.chars().count() as f64;
    }
    o += "</svg>\n";
    o
}

fn colour(name: &str) -> &'static str {
    match name {
        "kernel boot" => "#5f5f5f",
        "exec → init" => "#9e9e9e",
        "mounts" => "#4e79a7",
        "cmdline" => "#76b7b2",
        "hostname" => "#b07aa1",
        "network" => "#f28e2b",
        "python" => "#e15759",
        "agent" => "#59a14f",
        _ => "#bab0ac",
    }
}

use agent::units::ms2 as ms;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_scale_escaped_labels_and_legend() {
        let bars = vec![
            ("a<".to_string(), vec![("mounts".to_string(), 500), ("network".to_string(), 500)]),
            ("b".to_string(), vec![("mounts".to_string(), 10_000), ("python".to_string(), 30_000)]),
        ];
        let s = stacked_bars("t & u", &bars);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains(">t &amp; u<") && s.contains(">a&lt;<"));
        let widths: Vec<f64> = s
            .lines()
            .filter(|l| l.contains("<title>"))
            .map(|l| l.split("width=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(widths, [7.75, 7.75, 155.0, 465.0]);
        assert!(s.contains(">1.00 ms</text>") && s.contains(">40.00 ms</text>"));
        // The legend names each segment once, in order of first appearance.
        let legend: Vec<&str> = s.lines().filter(|l| l.contains("height=\"12\"")).map(|l| l.rsplit("\">").next().unwrap()).collect();
        assert_eq!(legend, ["mounts</text>", "network</text>", "python</text>"]);
    }
}
