//! Reading samples out of a `/metrics` scrape.

/// The value of the one sample of `name` whose labels include `labels`.
pub fn value(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let matching: Vec<&prometheus_parse::Sample> = scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .filter(|sample| {
            labels
                .iter()
                .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} {labels:?} matches {} samples",
        matching.len()
    );
    matching.first().map(|sample| match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        prometheus_parse::Value::Histogram(buckets) => {
            buckets.last().map_or(0.0, |bucket| bucket.count)
        }
        prometheus_parse::Value::Summary(_) => panic!("{name} is a summary"),
    })
}

/// Calls refused at once for `reason` (`catalogue_shed_total`).
pub fn shed(scrape: &prometheus_parse::Scrape, reason: &str) -> Option<f64> {
    value(scrape, "catalogue_shed_total", &[("reason", reason)])
}

/// The cumulative count of the histogram bucket `le` of the one series of
/// `name` whose labels include `labels`.
pub fn bucket(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
    le: f64,
) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|sample| {
            sample.metric == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?}"));
    let prometheus_parse::Value::Histogram(buckets) = &sample.value else {
        panic!("{name} is not a histogram");
    };
    buckets
        .iter()
        .find(|bucket| (bucket.less_than - le).abs() < 1e-12)
        .map(|bucket| bucket.count)
        .unwrap_or_else(|| panic!("{name} has no bucket {le}"))
}
