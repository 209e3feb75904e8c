//! Reading a metrics exposition the way a scraper does: a strict parser of the Prometheus text
//! format (0.0.4) and of OpenMetrics text (1.0), which fails on anything a scraper would refuse
//! (a sample before its family's `# TYPE`, a family without `# HELP`, a sample name that does
//! not belong to its family's type, duplicate series, buckets that are not cumulative, a missing
//! or misplaced `# EOF` in OpenMetrics), and the samples it read, to assert exact values on.

use std::collections::{BTreeMap, BTreeSet};

/// Which text format a body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

/// One metric family's metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Family {
    pub help: Option<String>,
    pub kind: Option<String>,
    pub unit: Option<String>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// The family it belongs to.
    pub family: String,
}

/// A parsed, valid exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the series `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// Like [`Exposition::value`], failing the test when the series is absent.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in the exposition"))
    }

    /// Every sample named `name` whose labels include all of `labels`.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// Every value any label takes, over all samples.
    pub fn label_values(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .flat_map(|s| s.labels.values().cloned())
            .collect()
    }
}

/// The sample names a family of `kind` named `family` may have, in `format`.
fn allowed_names(family: &str, kind: &str, format: Format) -> Vec<String> {
    let with = |suffixes: &[&str]| {
        suffixes
            .iter()
            .map(|s| format!("{family}{s}"))
            .collect::<Vec<_>>()
    };
    match (kind, format) {
        ("counter", Format::OpenMetrics) => with(&["_total", "_created"]),
        ("info", Format::OpenMetrics) => with(&["_info"]),
        ("histogram" | "gaugehistogram", _) => {
            with(&["_bucket", "_sum", "_count", "_created", "_gsum", "_gcount"])
        }
        ("summary", _) => with(&["", "_sum", "_count", "_created"]),
        _ => with(&[""]),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `{k="v",…}` at the start of `rest`; answers the labels and what follows.
fn parse_labels(rest: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut chars = rest.char_indices().peekable();
    if chars.next().map(|(_, c)| c) != Some('{') {
        return Ok((labels, rest));
    }
    loop {
        // A label name, or the closing brace.
        let start = match chars.peek() {
            Some((_, '}')) => {
                let (i, _) = chars.next().unwrap();
                return Ok((labels, &rest[i + 1..]));
            }
            Some((i, _)) => *i,
            None => return Err("unterminated label set".into()),
        };
        let mut end = start;
        while let Some((i, c)) = chars.peek() {
            if *c == '=' {
                break;
            }
            end = *i + c.len_utf8();
            chars.next();
        }
        let name = &rest[start..end];
        if !valid_name(name) || name.contains(':') {
            return Err(format!("bad label name {name:?}"));
        }
        if chars.next().map(|(_, c)| c) != Some('=') || chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {name} has no quoted value"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in label {name}")),
                },
                Some((_, '"')) => break,
                Some((_, '\n')) | None => return Err(format!("unterminated value of {name}")),
                Some((_, c)) => value.push(c),
            }
        }
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} appears twice"));
        }
        match chars.next() {
            Some((_, ',')) => {}
            Some((i, '}')) => return Ok((labels, &rest[i + 1..])),
            other => return Err(format!("unexpected {other:?} after label {name}")),
        }
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("bad value {text:?}")),
    }
}

/// Parses and validates `text` as `format`; the error names the line and what is wrong.
pub fn parse(text: &str, format: Format) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("the exposition does not end with a newline".into());
    }
    let mut out = Exposition::default();
    let mut current: Option<String> = None;
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut seen: BTreeSet<(String, BTreeMap<String, String>)> = BTreeSet::new();
    let mut eof = false;
    for (number, line) in text.lines().enumerate() {
        let at = |message: String| format!("line {}: {message}: {line:?}", number + 1);
        if eof {
            return Err(at("text after # EOF".into()));
        }
        if line == "# EOF" {
            if format == Format::Prometheus {
                return Err(at("# EOF in the Prometheus text format".into()));
            }
            eof = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (keyword, name, rest) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
                if format == Format::OpenMetrics {
                    return Err(at("a comment OpenMetrics does not allow".into()));
                }
                continue;
            }
            if !valid_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            if current.as_deref() != Some(name) {
                if let Some(previous) = current.take() {
                    closed.insert(previous);
                }
                if closed.contains(name) {
                    return Err(at(format!("family {name} is split")));
                }
                current = Some(name.to_owned());
            }
            let family = out.families.entry(name.to_owned()).or_default();
            let slot = match keyword {
                "HELP" => &mut family.help,
                "TYPE" => &mut family.kind,
                _ => {
                    if format == Format::Prometheus {
                        return Err(at("# UNIT in the Prometheus text format".into()));
                    }
                    if !name.ends_with(&format!("_{rest}")) {
                        return Err(at("the unit is not the name's suffix".into()));
                    }
                    &mut family.unit
                }
            };
            if slot.replace(rest.to_owned()).is_some() {
                return Err(at(format!("a second # {keyword} for {name}")));
            }
            if keyword == "TYPE" {
                let known: &[&str] = match format {
                    Format::Prometheus => &["counter", "gauge", "histogram", "summary", "untyped"],
                    Format::OpenMetrics => &[
                        "counter",
                        "gauge",
                        "histogram",
                        "gaugehistogram",
                        "stateset",
                        "info",
                        "summary",
                        "unknown",
                    ],
                };
                if !known.contains(&rest) {
                    return Err(at(format!("unknown type {rest:?}")));
                }
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            return Err(at("neither a comment nor a sample".into()));
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name) {
            return Err(at(format!("bad sample name {name:?}")));
        }
        let (labels, rest) = parse_labels(&line[name_end..]).map_err(at)?;
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if fields.clone().count() > 1 {
            return Err(at("more than a value and a timestamp".into()));
        }
        let family_name = current
            .clone()
            .ok_or_else(|| at("a sample before any # TYPE".into()))?;
        let family = &out.families[&family_name];
        let kind = family
            .kind
            .clone()
            .ok_or_else(|| at(format!("a sample of {family_name} before its # TYPE")))?;
        if !allowed_names(&family_name, &kind, format)
            .iter()
            .any(|n| n == name)
        {
            return Err(at(format!(
                "{name} is no sample name of the {kind} family {family_name}"
            )));
        }
        if !seen.insert((name.to_owned(), labels.clone())) {
            return Err(at("a duplicate series".into()));
        }
        out.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
            family: family_name,
        });
    }
    if format == Format::OpenMetrics && !eof {
        return Err("the OpenMetrics exposition does not end with # EOF".into());
    }
    for (name, family) in &out.families {
        if family.help.is_none() || family.kind.is_none() {
            return Err(format!("family {name} lacks # HELP or # TYPE"));
        }
    }
    check_histograms(&out)?;
    Ok(out)
}

/// Every histogram series has cumulative buckets ending in `le="+Inf"`, equal to its count.
fn check_histograms(out: &Exposition) -> Result<(), String> {
    for (name, family) in &out.families {
        if family.kind.as_deref() != Some("histogram") {
            continue;
        }
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for sample in out.samples.iter().filter(|s| &s.family == name) {
            if sample.name.ends_with("_bucket") {
                let mut labels = sample.labels.clone();
                let le = labels
                    .remove("le")
                    .ok_or_else(|| format!("a bucket of {name} without le"))?;
                series
                    .entry(labels)
                    .or_default()
                    .push((parse_value(&le)?, sample.value));
            }
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("buckets of {name}{labels:?} are not cumulative"));
            }
            let last = buckets.last().copied().unwrap_or((0.0, 0.0));
            let label_list: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let count = out.value(&format!("{name}_count"), &label_list);
            if last.0 != f64::INFINITY || count != Some(last.1) {
                return Err(format!(
                    "{name}{labels:?}: the +Inf bucket does not equal the count"
                ));
            }
        }
    }
    Ok(())
}
