//! A parsed `/metrics` scrape of a running node: samples by series, and each family's type.

use std::collections::BTreeMap;

use crate::e2e::Server;

#[derive(Debug)]
pub struct Scrape {
    pub text: String,
    /// `name{labels}` (as exposed) to value.
    pub samples: BTreeMap<String, f64>,
    /// Family name to its `# TYPE`.
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    pub fn of(server: &Server) -> Scrape {
        let r = server.json("GET", "/metrics", None);
        assert_eq!(r.status, 200, "{r:?}");
        Scrape::parse(&String::from_utf8_lossy(&r.raw))
    }

    pub fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    types.insert(name.to_owned(), kind.to_owned());
                }
            } else if !line.starts_with('#') {
                if let Some((series, value)) = line.rsplit_once(' ') {
                    if let Ok(v) = value.parse::<f64>() {
                        samples.insert(series.to_owned(), v);
                    }
                }
            }
        }
        Scrape { text: text.to_owned(), samples, types }
    }

    /// The value of `series` (`name` or `name{labels}`, exactly as exposed).
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// The value of `series`; panics with the scrape when it is missing.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series).unwrap_or_else(|| panic!("no {series} in\n{}", self.text))
    }

    /// Whether a family is declared with a HELP line and this TYPE.
    pub fn declares(&self, name: &str, kind: &str) -> bool {
        self.types.get(name).is_some_and(|k| k == kind) && self.text.contains(&format!("# HELP {name} "))
    }

    /// Whether a metric name a query may use is exposed: a family, or a histogram's
    /// `_bucket`/`_sum`/`_count` series.
    pub fn exposes(&self, name: &str) -> bool {
        self.types.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix).is_some_and(|family| self.types.get(family).is_some_and(|k| k == "histogram"))
            })
    }
}
