//! The table: one row per measurement, a column per server, the ratios turnd/coturn and
//! turnd/floor, and the target with whether this run met it.

use std::fmt::Write;

/// What a row's target compares.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    None,
    /// turnd ≤ factor × floor (costs).
    AtMostFloor(f64),
    /// turnd ≥ factor × floor (rates).
    AtLeastFloor(f64),
    /// turnd ≤ factor × coturn.
    AtMostCoturn(f64),
    /// turnd ≥ factor × coturn.
    AtLeastCoturn(f64),
    /// turnd's own value ≥ this (a ratio between two turnd runs).
    AtLeast(f64),
    /// turnd's own value ≤ this.
    AtMost(f64),
}

pub struct Row {
    pub name: String,
    /// turnd, coturn, floor.
    pub values: [Option<f64>; 3],
    pub target: Target,
    pub note: String,
    /// A comparison of two turnd runs: the other servers have no value, by design.
    pub turnd_only: bool,
}

impl Row {
    pub fn new(name: &str, values: [Option<f64>; 3], target: Target) -> Row {
        Row {
            name: name.to_owned(),
            values,
            target,
            note: String::new(),
            turnd_only: false,
        }
    }

    fn ratio(&self, other: usize) -> Option<f64> {
        match (self.values[0], self.values[other]) {
            (Some(t), Some(o)) if o > 0.0 => Some(t / o),
            _ => None,
        }
    }

    /// The target in words, and whether it was met.
    pub fn verdict(&self) -> (String, Option<bool>) {
        let t = self.values[0];
        match self.target {
            Target::None => (String::new(), None),
            Target::AtMostFloor(f) => (format!("≤ {f}× floor"), self.ratio(2).map(|r| r <= f)),
            Target::AtLeastFloor(f) => (format!("≥ {f}× floor"), self.ratio(2).map(|r| r >= f)),
            Target::AtMostCoturn(f) => (format!("≤ {f}× coturn"), self.ratio(1).map(|r| r <= f)),
            Target::AtLeastCoturn(f) => (format!("≥ {f}× coturn"), self.ratio(1).map(|r| r >= f)),
            Target::AtLeast(f) => (format!("≥ {f}"), t.map(|v| v >= f)),
            Target::AtMost(f) => (format!("≤ {f}"), t.map(|v| v <= f)),
        }
    }
}

fn cell(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{:.0}", v),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// The table in Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str(
        "| measurement | turnd | coturn | floor | turnd/coturn | turnd/floor | target | met |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---:|---|---|\n");
    for r in rows {
        let (target, met) = r.verdict();
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let name = if r.note.is_empty() {
            r.name.clone()
        } else {
            format!("{} ({})", r.name, r.note)
        };
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {target} | {met} |",
            cell(r.values[0]),
            cell(r.values[1]),
            cell(r.values[2]),
            r.ratio(1).map_or("—".into(), |x| format!("{x:.2}")),
            r.ratio(2).map_or("—".into(), |x| format!("{x:.2}")),
        );
    }
    s
}

/// Replaces the text between the results markers `<!-- NAME:begin -->` and
/// `<!-- NAME:end -->` of `doc` (or appends them).
pub fn splice(doc: &str, name: &str, results: &str) -> String {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    match (doc.find(&begin), doc.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{begin}\n{results}{}", &doc[..b], &doc[e..])
        }
        _ => format!("{doc}\n{begin}\n{results}{end}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_compare_turnd_with_the_named_column() {
        let r = Row::new(
            "x",
            [Some(1.2), Some(2.0), Some(1.0)],
            Target::AtMostFloor(1.1),
        );
        assert_eq!(r.verdict().1, Some(false));
        let r = Row::new(
            "x",
            [Some(1.0), Some(2.0), Some(1.0)],
            Target::AtMostFloor(1.1),
        );
        assert_eq!(r.verdict().1, Some(true));
        let r = Row::new(
            "x",
            [Some(5.0), Some(2.0), None],
            Target::AtLeastCoturn(2.0),
        );
        assert_eq!(r.verdict().1, Some(true));
        let r = Row::new("x", [Some(5.0), None, None], Target::AtLeastCoturn(2.0));
        assert_eq!(r.verdict().1, None);
    }

    #[test]
    fn splice_replaces_only_the_results() {
        let doc = "intro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nanalysis\n";
        let out = splice(doc, "bench", "new\n");
        assert_eq!(
            out,
            "intro\n<!-- bench:begin -->\nnew\n<!-- bench:end -->\nanalysis\n"
        );
        assert!(splice("intro\n", "bench", "new\n")
            .contains("<!-- bench:begin -->\nnew\n<!-- bench:end -->"));
        // The veth group's section is its own: neither splice touches the other's.
        let both = "<!-- bench:begin -->\na\n<!-- bench:end -->\n<!-- bench:veth:begin -->\nb\n<!-- bench:veth:end -->\n";
        assert_eq!(
            splice(both, "bench:veth", "c\n"),
            "<!-- bench:begin -->\na\n<!-- bench:end -->\n<!-- bench:veth:begin -->\nc\n<!-- bench:veth:end -->\n"
        );
        assert_eq!(
            splice(both, "bench", "c\n"),
            "<!-- bench:begin -->\nc\n<!-- bench:end -->\n<!-- bench:veth:begin -->\nb\n<!-- bench:veth:end -->\n"
        );
    }
}
