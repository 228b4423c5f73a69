//! The monitoring examples (`examples/observability/`) and the metrics table of
//! `docs/operations.md` hold to the metrics the gateway registers: every alert and panel
//! expression parses as PromQL, every metric it reads is one the gateway exposes, and every
//! metric is documented.

use std::collections::BTreeSet;

use entrepot::metrics::{FAMILIES, Kind};
use promql_parser::parser::{Expr, parse};
use promql_parser::util::{ExprVisitor, parse_duration, walk_expr};
use serde_json::Value;

use crate::support::root;

/// Series made by Prometheus itself, not by the gateway.
const PROMETHEUS_OWN: &[&str] = &["up"];

/// Every series name a scrape of the gateway can hold: each family's name, and a histogram's
/// `_bucket`, `_sum` and `_count` series instead of its bare name.
fn series_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for f in FAMILIES {
        if f.kind == Kind::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{}{suffix}", f.name));
            }
        } else {
            names.insert(f.name.to_string());
        }
    }
    names
}

/// The family a series name belongs to.
fn family_of(series: &str) -> &'static str {
    FAMILIES
        .iter()
        .find(|f| {
            series == f.name
                || (f.kind == Kind::Histogram
                    && series
                        .strip_prefix(f.name)
                        .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s)))
        })
        .map(|f| f.name)
        .unwrap_or_else(|| panic!("{series} is no family"))
}

struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = String;
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector = match expr {
            Expr::VectorSelector(v) => Some(v),
            Expr::MatrixSelector(m) => Some(&m.vs),
            _ => None,
        };
        if let Some(v) = selector {
            let name = v.name.clone().or_else(|| {
                v.matchers
                    .matchers
                    .iter()
                    .find(|m| m.name == "__name__")
                    .map(|m| m.value.clone())
            });
            self.0
                .insert(name.ok_or_else(|| format!("a selector without a metric name: {v}"))?);
        }
        Ok(true)
    }
}

/// The metric names `expr` reads; it must parse as PromQL and read only series the gateway
/// (or Prometheus itself) makes.
fn check_expr(where_: &str, expr: &str) -> BTreeSet<String> {
    let parsed = parse(expr).unwrap_or_else(|e| panic!("{where_}: {e}\n{expr}"));
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &parsed).unwrap_or_else(|e| panic!("{where_}: {e}"));
    let known = series_names();
    for n in &names.0 {
        assert!(
            known.contains(n) || PROMETHEUS_OWN.contains(&n.as_str()),
            "{where_}: `{n}` is not a series of the gateway's metrics\n{expr}"
        );
    }
    assert!(!names.0.is_empty(), "{where_} reads no metric: {expr}");
    names.0
}

/// The gauges read from the shared store when scraped: with several instances on one store
/// each reports the same value, so summing them over instances multiplies it (the operations
/// guide says: `max`, not `sum`).
const SHARED_GAUGES: &[&str] = &[
    "entrepot_outbox_pending",
    "entrepot_dead_letters",
    "entrepot_delivery_lag_seconds",
    "entrepot_order_sagas_unfinished",
];

/// The shared gauges `expr` sums (the argument of a `sum` aggregation).
struct Summed(BTreeSet<String>);

impl ExprVisitor for Summed {
    type Error = String;
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        if let Expr::Aggregate(a) = expr
            && a.op.to_string() == "sum"
        {
            let mut names = Names(BTreeSet::new());
            walk_expr(&mut names, &a.expr)?;
            self.0.extend(
                names
                    .0
                    .into_iter()
                    .filter(|n| SHARED_GAUGES.contains(&n.as_str())),
            );
        }
        Ok(true)
    }
}

/// Panics when `expr` sums a gauge read from the shared store.
fn check_not_summed(where_: &str, expr: &str) {
    let parsed = parse(expr).unwrap_or_else(|e| panic!("{where_}: {e}\n{expr}"));
    let mut summed = Summed(BTreeSet::new());
    walk_expr(&mut summed, &parsed).unwrap_or_else(|e| panic!("{where_}: {e}"));
    assert!(
        summed.0.is_empty(),
        "{where_}: sums {:?}, which every instance reads from the shared store: use max\n{expr}",
        summed.0
    );
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_alert_parses_reads_known_metrics_and_is_complete() {
    let rules: Value =
        serde_yaml_ng::from_str(&read("examples/observability/prometheus/alerts.yml")).unwrap();
    let mut alerts = BTreeSet::new();
    let mut read_families = BTreeSet::new();
    for group in rules["groups"].as_array().expect("groups") {
        let name = group["name"].as_str().expect("a group has a name");
        for rule in group["rules"].as_array().expect("a group has rules") {
            let alert = rule["alert"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: a rule without `alert`: {rule}"));
            assert!(alerts.insert(alert.to_string()), "{alert} twice");
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert}: no expr"));
            check_not_summed(alert, expr);
            for n in check_expr(alert, expr) {
                if !PROMETHEUS_OWN.contains(&n.as_str()) {
                    read_families.insert(family_of(&n));
                }
            }
            let duration = rule["for"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert}: no `for`"));
            parse_duration(duration).unwrap_or_else(|e| panic!("{alert}: for: {e}"));
            let severity = rule["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("warning" | "critical")),
                "{alert}: labels.severity is warning or critical, not {severity:?}"
            );
            let summary = rule["annotations"]["summary"].as_str().unwrap_or_default();
            assert!(
                !summary.trim().is_empty(),
                "{alert}: no annotations.summary"
            );
        }
    }
    // What the operations guide says to alert on has a rule.
    for family in [
        "entrepot_platform_requests_total",
        "entrepot_platform_request_duration_seconds",
        "entrepot_breaker_open",
        "entrepot_callbacks_total",
        "entrepot_dead_letters",
        "entrepot_delivery_lag_seconds",
        "entrepot_outbox_pending",
        "entrepot_reload_total",
        "entrepot_order_cancel_failures_total",
    ] {
        assert!(read_families.contains(family), "no alert reads {family}");
    }
}

fn panels(list: &Value, out: &mut Vec<Value>) {
    for p in list.as_array().into_iter().flatten() {
        out.push(p.clone());
        panels(&p["panels"], out);
    }
}

#[test]
fn every_dashboard_panel_parses_and_the_dashboard_shows_every_metric() {
    let dashboard: Value =
        serde_json::from_str(&read("examples/observability/grafana/entrepot.json")).unwrap();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let mut all = Vec::new();
    panels(&dashboard["panels"], &mut all);
    let mut shown = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for p in all {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_u64().expect("a panel id")),
            "{title}: id twice"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "{title}: no target");
        for t in targets {
            // Grafana replaces its own interval variables before Prometheus sees the query.
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: a target without expr"))
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m");
            check_not_summed(title, &expr);
            for n in check_expr(title, &expr) {
                shown.insert(family_of(&n));
            }
        }
    }
    let every: BTreeSet<&str> = FAMILIES.iter().map(|f| f.name).collect();
    let missing: Vec<_> = every.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "the dashboard shows none of {missing:?}"
    );
}

#[test]
fn the_prometheus_example_scrapes_metrics_and_loads_the_alerts() {
    let config: Value =
        serde_yaml_ng::from_str(&read("examples/observability/prometheus/prometheus.yml")).unwrap();
    let files: Vec<&str> = config["rule_files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(files, ["alerts.yml"]);
    let job = &config["scrape_configs"][0];
    assert_eq!(
        job["job_name"], "entrepot",
        "the alerts' `up` rule names this job"
    );
    assert_eq!(job["metrics_path"], "/metrics");
}

#[test]
fn the_operations_guide_documents_every_metric() {
    let doc = read("docs/operations.md");
    let table: Vec<&str> = doc
        .lines()
        .skip_while(|l| *l != "## Metrics")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `entrepot_"))
        .collect();
    let mut documented = BTreeSet::new();
    for row in &table {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`');
        let family = FAMILIES
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("docs/operations.md documents `{name}`, which is no metric"));
        assert_eq!(cells[2], family.kind.as_str(), "{name}: its type");
        let labels: Vec<&str> = cells[3]
            .split(',')
            .map(|l| l.trim().trim_matches('`'))
            .filter(|l| !l.is_empty() && *l != "—")
            .collect();
        assert_eq!(labels, family.labels, "{name}: its labels");
        assert!(documented.insert(name), "{name} twice");
    }
    let every: BTreeSet<&str> = FAMILIES.iter().map(|f| f.name).collect();
    let missing: Vec<_> = every.difference(&documented).collect();
    assert!(missing.is_empty(), "docs/operations.md misses {missing:?}");
}
