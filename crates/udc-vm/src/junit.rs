// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! JUnit XML for CI systems that show test results.

use crate::ktap::{Case, Outcome};

/// Text and attribute values as XML 1.0 allows them. The console log holds
/// control characters (colour escapes, a kernel's stray bytes) that XML 1.0
/// forbids even as character references: each becomes its Unicode control
/// picture (ESC shows as U+241B), so the log stays readable and the file
/// parses.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' | '\t' | '\r' => o.push(c),
            c if (c as u32) < 0x20 => o.push(char::from_u32(0x2400 + c as u32).expect("control pictures")),
            '\u{fffe}' | '\u{ffff}' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// One testsuite of `cases`; `system_out` (the console log's tail) goes
/// with it, and `properties` (which kernel, which f_fs) describe the run.
pub fn render(
    suite: &str,
    cases: &[Case],
    seconds: f64,
    system_out: &str,
    properties: &[(&str, String)],
) -> String {
    let failures = cases.iter().filter(|c| c.outcome == Outcome::Fail).count();
    let skipped = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Skip(_)))
        .count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x += &format!(
        "<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{seconds:.1}\">\n",
        esc(suite),
        cases.len()
    );
    if !properties.is_empty() {
        x += "  <properties>\n";
        for (k, v) in properties {
            x += &format!("    <property name=\"{}\" value=\"{}\"/>\n", esc(k), esc(v));
        }
        x += "  </properties>\n";
    }
    for c in cases {
        let time = c.seconds.map(|t| format!(" time=\"{t:.3}\"")).unwrap_or_default();
        x += &format!(
            "  <testcase classname=\"{}\" name=\"{}\"{time}>",
            esc(&c.suite),
            esc(&c.name)
        );
        match &c.outcome {
            Outcome::Pass => {}
            Outcome::Fail => {
                let msg = c.diagnostics.last().cloned().unwrap_or_else(|| "failed".into());
                x += &format!(
                    "\n    <failure message=\"{}\">{}</failure>\n  ",
                    esc(&msg),
                    esc(&c.diagnostics.join("\n"))
                );
            }
            Outcome::Skip(why) => x += &format!("<skipped message=\"{}\"/>", esc(why)),
        }
        x += "</testcase>\n";
    }
    x += &format!("  <system-out>{}</system-out>\n</testsuite>\n", esc(system_out));
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_their_diagnostics_escaped() {
        let cases = vec![
            Case {
                suite: "s".into(),
                name: "a".into(),
                outcome: Outcome::Pass,
                diagnostics: vec![],
                seconds: Some(1.25),
            },
            Case {
                suite: "s".into(),
                name: "b<&>".into(),
                outcome: Outcome::Fail,
                diagnostics: vec!["x < y".into()],
                seconds: None,
            },
        ];
        let x = render(
            "udc-vm",
            &cases,
            1.0,
            "log \u{1b}[0m",
            &[("f_fs", "stock <x>".into())],
        );
        assert!(x.contains("<property name=\"f_fs\" value=\"stock &lt;x&gt;\"/>"));
        assert!(x.contains("tests=\"2\" failures=\"1\""));
        assert!(
            x.contains("<testcase classname=\"s\" name=\"a\" time=\"1.250\">"),
            "{x}"
        );
        assert!(
            x.contains("<testcase classname=\"s\" name=\"b&lt;&amp;&gt;\">"),
            "no time when the guest gave none"
        );
        assert!(x.contains("name=\"b&lt;&amp;&gt;\""));
        assert!(x.contains("<failure message=\"x &lt; y\">x &lt; y</failure>"));
        assert!(x.contains("log \u{241b}[0m"));
    }

    /// What a CI server's XML parser makes of it: every control character a
    /// console can hold, in names, messages and the log.
    #[test]
    fn the_file_is_xml_1_0_whatever_the_log_holds() {
        let nasty: String = (0u32..0x20)
            .filter_map(char::from_u32)
            .chain(['\u{fffe}', '\u{ffff}'])
            .collect();
        let cases = vec![Case {
            suite: format!("s{nasty}"),
            name: format!("n{nasty}"),
            outcome: Outcome::Fail,
            diagnostics: vec![format!("d{nasty}")],
            seconds: None,
        }];
        let x = render(
            "udc-vm",
            &cases,
            1.0,
            &format!("log {nasty}"),
            &[("k", nasty.clone())],
        );
        let doc = roxmltree::Document::parse(&x).unwrap_or_else(|e| panic!("not XML 1.0: {e}"));
        let out = doc
            .descendants()
            .find(|n| n.has_tag_name("system-out"))
            .and_then(|n| n.text())
            .unwrap();
        assert!(out.starts_with("log \u{2400}\u{2401}"), "{out:?}");
    }
}
