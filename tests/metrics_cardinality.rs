//! Given 100 000 endpoints, each with its metric handles built the way a
//! sender builds them (`EndpointMetrics::new(id, per_endpoint_labels)`, as
//! `SenderDeps::metrics_for` does), when `/metrics` is scraped, then the
//! exposition stays under 50 000 series: the first
//! `[metrics] max_endpoint_series` (1000 by default) endpoints have series
//! of their own, the others count in `endpoint="_other"`.

use hookstream::metrics::EndpointMetrics;

const ENDPOINTS: usize = 100_000;

async fn scrape(port: u16) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_endpoints_stay_under_fifty_thousand_series() {
    let port = hookstream::metrics::install_exporter("127.0.0.1:0")
        .unwrap()
        .port();
    let cap = hookstream::config::MetricsConfig::default().max_endpoint_series;
    assert_eq!(cap, 1000, "the documented default");
    let handles: Vec<EndpointMetrics> = (0..ENDPOINTS)
        .map(|i| EndpointMetrics::new(&format!("endpoint-{i}"), true))
        .collect();
    // One delivery to an endpoint with series of its own, two to endpoints
    // beyond the cap.
    handles[7].delivered.increment(1);
    handles[50_000].delivered.increment(1);
    handles[ENDPOINTS - 1].delivered.increment(1);
    // A sender made again for an endpoint (senders come and go) finds the
    // same series.
    EndpointMetrics::new("endpoint-7", true)
        .delivered
        .increment(1);

    let text = scrape(port).await;
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    let endpoint_labels: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("hookstream_deliveries_total{"))
        .filter_map(|l| l.split("endpoint=\"").nth(1)?.split('"').next())
        .collect();
    println!(
        "{ENDPOINTS} endpoints: {series} series, {} endpoint label values",
        endpoint_labels.len()
    );
    assert!(series < 50_000, "{series} series");
    assert_eq!(endpoint_labels.len(), cap + 1, "the cap and _other");
    assert!(endpoint_labels.contains("_other"));
    assert!(text.contains(
        "hookstream_deliveries_total{endpoint=\"endpoint-7\",outcome=\"delivered\"} 2\n"
    ));
    assert!(
        text.contains("hookstream_deliveries_total{endpoint=\"_other\",outcome=\"delivered\"} 2\n")
    );
    assert!(!text.contains("endpoint=\"endpoint-50000\""));

    // Deleting endpoints frees their places for the next ones.
    hookstream::metrics::forget_endpoints(&["endpoint-7"]);
    EndpointMetrics::new("newcomer", true)
        .delivered
        .increment(1);
    let text = scrape(port).await;
    assert!(!text.contains("endpoint=\"endpoint-7\""));
    assert!(
        text.contains(
            "hookstream_deliveries_total{endpoint=\"newcomer\",outcome=\"delivered\"} 1\n"
        )
    );
}
