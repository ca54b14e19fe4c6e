//! `actmax gallery`: an atlas as a static, offline HTML site — no server, no external URL.
//!
//! `DIR/index.html` lists the layers; `DIR/gallery/layer-NNN.html` is a layer's grid of
//! lazy-loaded tiles; `DIR/gallery/tile-NNN-FFFF.html` is one tile with its settings and
//! loss curve. Arrow keys move between tiles and layers, `u` goes up a level. Every
//! `<img>` records its natural size in `data-natural` once loaded (what the browser test
//! reads).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::manifest::read_manifest;
use crate::merge::read_plan;
use crate::{AtlasError, AtlasLayer, Plan, Result, TileRecord};

/// What a gallery holds.
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryReport {
    /// The site's entry page.
    pub index: PathBuf,
    /// Layer pages.
    pub layers: usize,
    /// Tile pages (finished tiles).
    pub tiles: usize,
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;background:#111;color:#ddd}
a{color:#8cf;text-decoration:none}a:hover{text-decoration:underline}
h1{font-size:1.4em}nav{margin:.5em 0 1em}nav a{margin-right:1.2em}
.grid{display:flex;flex-wrap:wrap;gap:6px}.grid a{display:block;text-align:center;font-size:11px;color:#aaa}
.grid img,.missing{width:112px;height:112px;display:block;background:#222;image-rendering:auto}
.missing{line-height:112px;color:#555}
table{border-collapse:collapse}td{padding:2px 10px 2px 0;vertical-align:top}td:first-child{color:#999}
.layers td{padding:4px 14px 4px 0}.tile{width:448px;max-width:90vw}
svg{background:#1a1a1a}";

const JS: &str = "// Keyboard navigation: a link carries the key that follows it.
document.addEventListener('keydown', function (e) {
  if (e.altKey || e.ctrlKey || e.metaKey) return;
  var a = document.querySelector('a[data-key=\"' + e.key + '\"]');
  if (a) { e.preventDefault(); location.href = a.href; }
});
// Each image records its natural size once loaded.
document.querySelectorAll('img').forEach(function (img) {
  function mark() { img.setAttribute('data-natural', img.naturalWidth + 'x' + img.naturalHeight); }
  if (img.complete && img.naturalWidth) mark(); else img.addEventListener('load', mark);
});
";

/// Writes the gallery of the atlas in `dir` into `dir` itself (pages beside the tiles).
pub fn gallery(dir: &Path) -> Result<GalleryReport> {
    let plan = read_plan(dir)?;
    let (records, _) = read_manifest(dir)?;
    let by_key: BTreeMap<(usize, usize), TileRecord> = records.into_iter().map(|r| (r.key(), r)).collect();
    let pages = dir.join("gallery");
    std::fs::create_dir_all(&pages).map_err(|e| AtlasError::io(&pages, e))?;
    write(&pages.join("gallery.css"), CSS)?;
    write(&pages.join("gallery.js"), JS)?;
    write(&dir.join("index.html"), &index_page(&plan, &by_key))?;
    let mut tiles = 0;
    for (l, layer) in plan.layers.iter().enumerate() {
        write(&pages.join(layer_page_name(layer)), &layer_page(&plan, l, &by_key))?;
        let done: Vec<&TileRecord> = layer.filters.iter().filter_map(|&f| by_key.get(&(layer.index, f))).collect();
        for (i, r) in done.iter().enumerate() {
            let prev = i.checked_sub(1).map(|p| done[p]);
            let next = done.get(i + 1).copied();
            write(&pages.join(tile_page_name(r)), &tile_page(&plan, layer, r, prev, next))?;
            tiles += 1;
        }
    }
    Ok(GalleryReport { index: dir.join("index.html"), layers: plan.layers.len(), tiles })
}

fn write(path: &Path, text: &str) -> Result<()> {
    crate::write_atomic(path, text.as_bytes())
}

fn layer_page_name(layer: &AtlasLayer) -> String {
    format!("layer-{:03}.html", layer.index)
}

fn tile_page_name(r: &TileRecord) -> String {
    format!("tile-{:03}-{:04}.html", r.layer_index, r.filter)
}

/// `&`, `<`, `>`, `"` and `'` escaped: layer names and settings come from model files.
fn esc(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A page: `root` is the way from the page to the atlas directory ("" or "../").
fn page(title: &str, root: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <link rel=\"stylesheet\" href=\"{root}gallery/gallery.css\"></head>\n<body>\n{body}\n\
         <script src=\"{root}gallery/gallery.js\"></script>\n</body></html>\n",
        t = esc(title)
    )
}

fn index_page(plan: &Plan, done: &BTreeMap<(usize, usize), TileRecord>) -> String {
    let total: usize = plan.layers.iter().map(|l| l.filters.len()).sum();
    let mut b = format!(
        "<h1>{} — activation atlas</h1>\n<p>{} of {total} tiles · preset <b>{}</b> · seed {} · model sha256 {}</p>\n\
         <table class=\"layers\"><tr><td>layer</td><td>kind</td><td>tiles</td><td></td></tr>\n",
        esc(&plan.model),
        done.len(),
        esc(&plan.preset),
        plan.seed,
        esc(&plan.model_sha256)
    );
    for layer in &plan.layers {
        let have: Vec<&TileRecord> = layer.filters.iter().filter_map(|&f| done.get(&(layer.index, f))).collect();
        let _ = write!(
            b,
            "<tr><td><a href=\"gallery/{}\">{}</a></td><td>{}</td><td>{} / {}</td><td>",
            layer_page_name(layer),
            esc(&layer.name),
            esc(&layer.kind),
            have.len(),
            layer.filters.len()
        );
        for r in have.iter().take(6) {
            let _ = write!(b, "<img src=\"{}\" width=\"40\" height=\"40\" loading=\"lazy\" alt=\"\">", esc(&r.png));
        }
        b.push_str("</td></tr>\n");
    }
    b.push_str("</table>\n<p>Keys: on a layer, ← → for the other layers, u for this list; on a tile, ← → for its neighbours, u for its layer.</p>");
    page(&format!("{} atlas", plan.model), "", &b)
}

fn layer_page(plan: &Plan, l: usize, done: &BTreeMap<(usize, usize), TileRecord>) -> String {
    let layer = &plan.layers[l];
    let mut b = String::from("<nav><a href=\"../index.html\" data-key=\"u\">↑ all layers</a>");
    if let Some(prev) = l.checked_sub(1).map(|p| &plan.layers[p]) {
        let _ = write!(b, "<a href=\"{}\" data-key=\"ArrowLeft\">← {}</a>", layer_page_name(prev), esc(&prev.name));
    }
    if let Some(next) = plan.layers.get(l + 1) {
        let _ = write!(b, "<a href=\"{}\" data-key=\"ArrowRight\">{} →</a>", layer_page_name(next), esc(&next.name));
    }
    let _ = write!(
        b,
        "</nav>\n<h1>{} <small>({}, {} filters)</small></h1>\n<div class=\"grid\">\n",
        esc(&layer.name),
        esc(&layer.kind),
        layer.count
    );
    for &f in &layer.filters {
        match done.get(&(layer.index, f)) {
            Some(r) => {
                let _ = writeln!(
                    b,
                    "<a href=\"{}\"><img src=\"../{}\" loading=\"lazy\" width=\"112\" height=\"112\" alt=\"filter {f}\">{f}</a>",
                    tile_page_name(r),
                    esc(&r.png)
                );
            }
            None => {
                let _ = writeln!(b, "<a><span class=\"missing\">not yet</span>{f}</a>");
            }
        }
    }
    b.push_str("</div>");
    page(&format!("{} · {}", layer.name, plan.model), "../", &b)
}

fn tile_page(
    plan: &Plan,
    layer: &AtlasLayer,
    r: &TileRecord,
    prev: Option<&TileRecord>,
    next: Option<&TileRecord>,
) -> String {
    let mut b = format!("<nav><a href=\"{}\" data-key=\"u\">↑ {}</a>", layer_page_name(layer), esc(&layer.name));
    if let Some(p) = prev {
        let _ = write!(b, "<a href=\"{}\" data-key=\"ArrowLeft\">← filter {}</a>", tile_page_name(p), p.filter);
    }
    if let Some(n) = next {
        let _ = write!(b, "<a href=\"{}\" data-key=\"ArrowRight\">filter {} →</a>", tile_page_name(n), n.filter);
    }
    let _ = write!(
        b,
        "</nav>\n<h1>{} · filter {}</h1>\n<img class=\"tile\" src=\"../{}\" alt=\"{} filter {}\">\n",
        esc(&r.layer),
        r.filter,
        esc(&r.png),
        esc(&r.layer),
        r.filter
    );
    b.push_str("<h2>Loss per step</h2>\n<p>This tile's own loss: minus the filter's mean activation over the step's views, plus the recipe's regularizers.</p>\n");
    b.push_str(&loss_curve_svg(&r.loss_curve));
    b.push_str("\n<h2>Settings</h2>\n<table>\n");
    let mut row = |k: &str, v: &str| {
        let _ = writeln!(b, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v));
    };
    row("activation on the saved PNG", &format!("{:.4}", r.activation));
    row("model", &r.model);
    row("model sha256", &r.model_sha256);
    row("layer", &format!("{} (index {})", r.layer, r.layer_index));
    row("preset", &r.preset);
    row("seed / tile seed", &format!("{} / {}", r.seed, r.tile_seed));
    row("steps", &r.steps.to_string());
    row("seconds", &format!("{:.2}", r.seconds));
    row("png sha256", &r.png_sha256);
    for (k, v) in &r.settings {
        row(k, v);
    }
    b.push_str("</table>");
    page(&format!("{} filter {} · {}", r.layer, r.filter, plan.model), "../", &b)
}

/// The loss per step as an inline SVG line, labelled with its first and last values.
fn loss_curve_svg(curve: &[f32]) -> String {
    let finite: Vec<f32> = curve.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() < 2 {
        return "<p>(no per-image loss recorded)</p>".into();
    }
    let (w, h, pad) = (480.0f32, 160.0f32, 24.0f32);
    let lo = finite.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = finite.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let n = (curve.len() - 1).max(1) as f32;
    let points: Vec<String> = curve
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, v)| {
            let x = pad + (w - 2.0 * pad) * i as f32 / n;
            let y = pad + (h - 2.0 * pad) * (hi - v) / span;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    format!(
        "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"loss per step\">\
         <polyline fill=\"none\" stroke=\"#8cf\" stroke-width=\"1.5\" points=\"{}\"/>\
         <text x=\"{pad}\" y=\"14\" fill=\"#999\" font-size=\"11\">max {hi:.4}</text>\
         <text x=\"{pad}\" y=\"{}\" fill=\"#999\" font-size=\"11\">min {lo:.4} · {} steps</text></svg>",
        points.join(" "),
        h - 6.0,
        curve.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_model_files_are_escaped() {
        assert_eq!(esc("<a href='x'>&\""), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;");
    }

    #[test]
    fn loss_curves_span_the_plot() {
        let svg = loss_curve_svg(&[3.0, 1.0, f32::NAN, 2.0]);
        assert!(svg.contains("polyline") && svg.contains("max 3.0000") && svg.contains("min 1.0000"));
        assert!(loss_curve_svg(&[1.0]).contains("no per-image loss"));
    }
}
