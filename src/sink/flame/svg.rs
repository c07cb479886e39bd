//! The SVG flamegraph: the folded lines drawn by inferno with its JS-aware palette, coloured by
//! a hash of each frame's label so a frame keeps its colour from run to run.

use super::{folded, Options, Profile};
use inferno::flamegraph::color::{MultiPalette, Palette};
use inferno::flamegraph::{self, Direction};
use std::io::Write;

/// Width of the "no samples" SVG when none is asked for (inferno's initial width too).
const FALLBACK_WIDTH: usize = 1200;

/// Writes `profile` as an SVG flamegraph; an empty profile gets a small SVG that says so.
pub(super) fn write(profile: &Profile, options: &Options, out: &mut impl Write) -> anyhow::Result<()> {
    let lines = folded::lines(profile);
    if lines.is_empty() {
        return write_empty(profile, options, out);
    }
    let mut opt = flamegraph::Options::default();
    if !profile.title.trim().is_empty() {
        opt.title = text(&profile.title);
    }
    opt.subtitle = Some(text(&profile.subtitle)).filter(|s| !s.is_empty());
    opt.colors = Palette::Multi(MultiPalette::Js);
    // FNV of the label: the same frame gets the same colour on every run and every machine.
    opt.deterministic = true;
    opt.count_name = "samples".into();
    opt.image_width = options.width;
    opt.direction = if options.inverted { Direction::Inverted } else { Direction::Straight };
    flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), out)?;
    Ok(())
}

/// inferno refuses to draw nothing (it writes an "ERROR" SVG and fails), yet "no samples" is a
/// real answer, e.g. `--stalls-only` on a loop that never stalled.
fn write_empty(profile: &Profile, options: &Options, out: &mut impl Write) -> anyhow::Result<()> {
    let width = options.width.unwrap_or(FALLBACK_WIDTH);
    let title = if profile.title.trim().is_empty() { "looptop" } else { &profile.title };
    write!(
        out,
        concat!(
            r#"<?xml version="1.0" standalone="no"?>"#,
            "\n",
            r#"<svg version="1.1" width="{w}" height="96" viewBox="0 0 {w} 96" xmlns="http://www.w3.org/2000/svg">"#,
            "\n",
            r##"<rect x="0" y="0" width="100%" height="100%" fill="#eeeeee"/>"##,
            "\n",
            r#"<text x="50%" y="24" text-anchor="middle" font-family="monospace" font-size="17">{title}</text>"#,
            "\n",
            r##"<text x="50%" y="48" text-anchor="middle" font-family="monospace" font-size="12" fill="#a0a0a0">{subtitle}</text>"##,
            "\n",
            r#"<text x="50%" y="78" text-anchor="middle" font-family="monospace" font-size="12">no samples: nothing to draw</text>"#,
            "\n</svg>\n"
        ),
        w = width,
        title = escape(&text(title)),
        subtitle = escape(&text(&profile.subtitle)),
    )?;
    Ok(())
}

/// Text for the SVG: characters XML 1.0 cannot carry at all become spaces.
fn text(s: &str) -> String {
    s.chars().map(|c| if folded::unfit(c) { ' ' } else { c }).collect::<String>().trim().to_string()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{self, frame, js_frame, native_frame, profile};
    use super::super::{Format, Options};
    use super::*;
    use crate::symbolize::FrameKind;

    fn svg(p: &Profile, options: &Options) -> String {
        let mut out = Vec::new();
        super::super::write(p, options, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Parses the whole document; inferno's SVG carries an SVG 1.1 DOCTYPE.
    fn parse(svg: &str) -> roxmltree::Document<'_> {
        let opts = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
        roxmltree::Document::parse_with_options(svg, opts).unwrap_or_else(|e| panic!("invalid XML: {e}\n{svg}"))
    }

    /// The text of every element named `tag`.
    fn texts<'a>(doc: &'a roxmltree::Document<'_>, tag: &str) -> Vec<&'a str> {
        doc.descendants().filter(|n| n.has_tag_name(tag)).filter_map(|n| n.text()).collect()
    }

    #[test]
    fn a_node_stall_draws_as_valid_svg_with_its_functions_and_title() {
        let p = testdata::node_stall();
        let svg = svg(&p, &Options::default());
        let doc = parse(&svg);
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts = texts(&doc, "text");
        assert!(texts.contains(&"looptop: node server.js"), "{texts:?}");
        assert!(texts.contains(&"5.0 s · 151 samples · 1 stall (stalls only)"), "{texts:?}");
        // Each frame's tooltip names it in full, without the palette annotation.
        let titles = texts_of_titles(&doc);
        for name in [
            "validateEmail /srv/app/server.js:12:17 (",
            "handleSignup /srv/app/server.js:20:22 (",
            "importUsers /srv/app/server.js:50:21 (",
            "RegExp:^([a-z0-9]+)+@ (",
            "v8::internal::JsonParser<unsigned char>::ParseJson (",
            "asm_sysvec_apic_timer_interrupt (",
        ] {
            assert!(titles.iter().any(|t| t.starts_with(name)), "no frame titled {name:?} in {titles:?}");
        }
        assert!(titles.iter().all(|t| !t.contains("_[j]") && !t.contains("_[k]")), "{titles:?}");
        assert!(titles.contains(&"validateEmail /srv/app/server.js:12:17 (143 samples, 94.70%)"), "{titles:?}");
        assert!(svg.contains(r#"total_samples="151""#));
    }

    fn texts_of_titles<'a>(doc: &'a roxmltree::Document<'_>) -> Vec<&'a str> {
        texts(doc, "title")
    }

    #[test]
    fn the_js_palette_colours_user_js_kernel_and_native_apart() {
        let p = testdata::node_stall();
        let svg = svg(&p, &Options::default());
        let doc = parse(&svg);
        let fill_of = |prefix: &str| -> String {
            let g = doc
                .descendants()
                .filter(|n| n.has_tag_name("g"))
                .find(|g| g.children().any(|t| t.has_tag_name("title") && t.text().unwrap_or("").starts_with(prefix)))
                .unwrap_or_else(|| panic!("no frame {prefix}"));
            let rect = g.children().find(|n| n.has_tag_name("rect")).unwrap();
            rect.attribute("fill").unwrap().to_string()
        };
        let rgb = |s: String| -> (u8, u8, u8) {
            let v: Vec<u8> =
                s.trim_start_matches("rgb(").trim_end_matches(')').split(',').map(|c| c.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        };
        // inferno's js palette: JS with a path green, kernel orange, C++ yellow.
        let (r, g, b) = rgb(fill_of("validateEmail "));
        assert!(g > r && g > b, "user JS is green: {r},{g},{b}");
        let (r, g, b) = rgb(fill_of("asm_sysvec_apic_timer_interrupt "));
        assert!(r > g && g > b && b == 0, "kernel is orange: {r},{g},{b}");
        let (r, g, b) = rgb(fill_of("uv_run "));
        assert!(r > g && g == b, "C is red: {r},{g},{b}");
        let (r, g, b) = rgb(fill_of("v8::internal::IrregexpInterpreter::MatchInternal "));
        assert!(r == g && r > b, "C++ is yellow: {r},{g},{b}");
    }

    #[test]
    fn identical_input_gives_identical_bytes() {
        let p = testdata::node_stall();
        let first = svg(&p, &Options::default());
        for _ in 0..3 {
            assert!(first == svg(&p, &Options::default()), "the SVG differs between two runs");
        }
        // The colour is the frame's own: another profile sharing a frame paints it the same.
        let other = profile(
            vec![native_frame("main"), js_frame("validateEmail", "/srv/app/server.js", 12, 17)],
            vec![(vec![0, 1], 9)],
        );
        let fill = |svg: &str| {
            let at = svg.find("<title>validateEmail ").unwrap();
            let rest = &svg[at..];
            let fill = &rest[rest.find("fill=\"").unwrap() + 6..];
            fill[..fill.find('"').unwrap()].to_string()
        };
        assert_eq!(fill(&first), fill(&svg(&other, &Options::default())));
    }

    #[test]
    fn an_empty_profile_is_a_valid_svg_that_says_so() {
        for (p, title) in [
            (Profile::default(), "looptop"),
            (profile(vec![native_frame("main")], vec![(vec![0], 0)]), "looptop: node server.js"),
            (
                Profile {
                    title: "looptop: <node> & \"co\"\u{1}".into(),
                    subtitle: "0 samples".into(),
                    ..Profile::default()
                },
                "looptop: <node> & \"co\"",
            ),
        ] {
            let svg = svg(&p, &Options::default());
            let doc = parse(&svg);
            assert_eq!(doc.root_element().tag_name().name(), "svg");
            let texts = texts(&doc, "text");
            assert_eq!(texts.first(), Some(&title));
            assert!(texts.contains(&"no samples: nothing to draw"), "{texts:?}");
        }
    }

    #[test]
    fn markup_and_control_characters_in_names_keep_the_xml_valid() {
        let p = Profile {
            title: "looptop: node -e '<a>&\u{7}\u{fffe}'".into(),
            subtitle: "line\nbreak".into(),
            ..profile(
                vec![
                    native_frame("operator<<(std::ostream&, char const*)"),
                    frame("RegExp:<\"&'>\u{0}\u{1b}[31m", FrameKind::V8Code),
                    js_frame("<anonymous>", "/srv/a&b.js", 1, 1),
                ],
                vec![(vec![0, 1], 3), (vec![0, 2], 1)],
            )
        };
        let svg = svg(&p, &Options { width: Some(800), inverted: true, ..Options::new(Format::Svg) });
        let doc = parse(&svg);
        assert_eq!(doc.root_element().attribute("width"), Some("800"));
        let titles = texts_of_titles(&doc);
        assert!(titles.iter().any(|t| t.starts_with("RegExp:<\"&'>  [31m (3 samples")), "{titles:?}");
        assert!(titles.iter().any(|t| t.starts_with("<anonymous> /srv/a&b.js:1:1 (1 samples")), "{titles:?}");
        assert!(texts(&doc, "text").contains(&"line break"));
    }

    #[test]
    fn thirty_thousand_samples_in_thousands_of_stacks() {
        // Not a timing assertion (DESIGN.md: speed goals live in benches/): the time is printed,
        // for `cargo test --release --lib thirty_thousand -- --nocapture`.
        let p = testdata::large(30_000, 3_000);
        assert_eq!(p.sample_count(), 30_000);
        let start = std::time::Instant::now();
        let mut out = Vec::new();
        super::super::write(&p, &Options::default(), &mut out).unwrap();
        let took = start.elapsed();
        eprintln!(
            "SVG of {} samples in {} stacks over {} frames: {} KiB in {:.1} ms",
            p.sample_count(),
            p.stacks.len(),
            p.frames.len(),
            out.len() / 1024,
            took.as_secs_f64() * 1e3
        );
        let svg = String::from_utf8(out).unwrap();
        parse(&svg);
        assert!(svg.contains(r#"total_samples="30000""#));
    }

    #[test]
    fn a_real_node_profile_draws_every_blocker_with_its_sample_count() {
        let p = testdata::node_demo();
        let svg = svg(&p, &Options::default());
        let doc = parse(&svg);
        let titles = texts_of_titles(&doc);
        assert!(texts(&doc, "text").contains(&"looptop: node server.js"));
        for name in ["validateSearch", "importUsers", "checkPassword", "buildReport"] {
            let id = p.frames.iter().position(|f| f.name == name).unwrap() as u32;
            let samples: u64 = p.stacks.iter().filter(|(s, _)| s.contains(&id)).map(|(_, w)| w).sum();
            let frame = &p.frames[id as usize];
            let expected = format!("{name} {} ({} samples, ", frame.location().unwrap(), thousands(samples));
            assert!(titles.iter().any(|t| t.starts_with(&expected)), "no {expected:?} in {titles:#?}");
        }
    }

    /// 1404 → `1,404`, as inferno writes counts.
    fn thousands(n: u64) -> String {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    }
}
