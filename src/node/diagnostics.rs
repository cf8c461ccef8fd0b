//! `/diagnostics`: one `DiagnosticStatus` per camera every period, with rates, latency
//! percentiles over the last period, drops, decode errors, device, model, batch size and the
//! temporal-stability metrics, at a level chosen by the parameter thresholds.

use super::params::{DiagnosticsParams, Thresholds};
use crate::msgs::DiagnosticStatus;
use crate::tracking::metrics::StabilityReport;

pub const OK: u8 = 0;
pub const WARN: u8 = 1;
pub const ERROR: u8 = 2;
pub const STALE: u8 = 3;

/// One camera over the last period.
#[derive(Debug, Clone, Default)]
pub struct PeriodStats {
    pub period_s: f64,
    pub received: u64,
    pub dropped: u64,
    pub published: u64,
    pub decode_errors: u64,
    /// Receive -> publish latencies of the frames published in the period, ms.
    pub latencies_ms: Vec<f64>,
    /// Seconds since the last frame arrived (`None`: never, since activation).
    pub since_last_frame_s: Option<f64>,
    /// Seconds since activation, so a camera is not STALE before it had a chance.
    pub active_for_s: f64,
}

impl PeriodStats {
    pub fn input_rate_hz(&self) -> f64 {
        rate(self.received, self.period_s)
    }
    pub fn output_rate_hz(&self) -> f64 {
        rate(self.published, self.period_s)
    }
    pub fn drop_ratio(&self) -> f64 {
        if self.received == 0 {
            0.0
        } else {
            self.dropped as f64 / self.received as f64
        }
    }
    pub fn latency_p50_ms(&self) -> Option<f64> {
        percentile(&self.latencies_ms, 0.50)
    }
    pub fn latency_p95_ms(&self) -> Option<f64> {
        percentile(&self.latencies_ms, 0.95)
    }
}

fn rate(n: u64, period_s: f64) -> f64 {
    if period_s > 0.0 {
        n as f64 / period_s
    } else {
        0.0
    }
}

/// Nearest-rank percentile (the smallest value with at least `q` of the samples at or below it).
pub fn percentile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (q * s.len() as f64).ceil().max(1.0) as usize;
    s.get(rank.min(s.len()) - 1).copied()
}

fn breaches(s: &PeriodStats, t: &Thresholds) -> Vec<String> {
    let mut out = Vec::new();
    if t.min_input_rate_hz > 0.0 && s.input_rate_hz() < t.min_input_rate_hz {
        out.push(format!(
            "input rate {:.2} Hz < {:.2} Hz",
            s.input_rate_hz(),
            t.min_input_rate_hz
        ));
    }
    if let Some(p95) = s.latency_p95_ms() {
        if t.max_latency_p95_ms > 0.0 && p95 > t.max_latency_p95_ms {
            out.push(format!(
                "latency p95 {p95:.1} ms > {:.1} ms",
                t.max_latency_p95_ms
            ));
        }
    }
    if t.max_drop_ratio > 0.0 && s.drop_ratio() > t.max_drop_ratio {
        out.push(format!(
            "drop ratio {:.2} > {:.2}",
            s.drop_ratio(),
            t.max_drop_ratio
        ));
    }
    out
}

/// The level and the reasons for it. STALE when no frame arrived for `stale_timeout` (counted
/// from activation when none ever came); decode errors in the period are at least WARN.
pub fn level(s: &PeriodStats, p: &DiagnosticsParams, decode_note: Option<&str>) -> (u8, String) {
    let silent_for = s.since_last_frame_s.unwrap_or(s.active_for_s);
    if silent_for >= p.stale_timeout_s {
        return (
            STALE,
            format!(
                "no input frame for {silent_for:.1} s (stale timeout {:.1} s)",
                p.stale_timeout_s
            ),
        );
    }
    let errors = breaches(s, &p.error);
    if !errors.is_empty() {
        return (ERROR, errors.join("; "));
    }
    let mut warns = breaches(s, &p.warn);
    if s.decode_errors > 0 {
        warns.push(format!(
            "{} frames could not be decoded{}",
            s.decode_errors,
            decode_note.map(|n| format!(": {n}")).unwrap_or_default()
        ));
    }
    if !warns.is_empty() {
        return (WARN, warns.join("; "));
    }
    (OK, "OK".into())
}

/// Totals and context shown next to the period numbers.
#[derive(Debug, Clone, Default)]
pub struct CameraContext {
    pub node: String,
    pub camera: String,
    pub topic: String,
    pub device: String,
    pub model: String,
    pub received_total: u64,
    pub processed_total: u64,
    pub dropped_total: u64,
    pub published_total: u64,
    pub decode_errors_total: u64,
    /// Decode error counts by reason, and the first message of each reason.
    pub decode_reasons: Vec<(String, u64, String)>,
    pub inference_errors_total: u64,
    pub last_batch_size: usize,
    pub stability: Option<StabilityReport>,
    /// For a camera with a depth topic.
    pub depth: Option<DepthDiagnostics>,
}

/// A camera's depth input on `/diagnostics`.
#[derive(Debug, Clone)]
pub struct DepthDiagnostics {
    /// The `depth.*` key-values.
    pub values: Vec<(String, String)>,
    /// Why the depth input makes the level at least WARN, if it does.
    pub warning: Option<String>,
}

/// One camera's `DiagnosticStatus`.
pub fn camera_status(
    c: &CameraContext,
    s: &PeriodStats,
    p: &DiagnosticsParams,
) -> DiagnosticStatus {
    let note = c
        .decode_reasons
        .iter()
        .map(|(_, _, m)| m.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let (mut lvl, mut message) = level(s, p, (!note.is_empty()).then_some(note.as_str()));
    // A depth input that fails (bad CameraInfo, wrong encoding) or never gets a CameraInfo is at
    // least WARN, with why.
    if let Some(text) = c.depth.as_ref().and_then(|d| d.warning.as_ref()) {
        if lvl == OK || lvl == WARN {
            message = if lvl == OK {
                text.clone()
            } else {
                format!("{message}; {text}")
            };
            lvl = WARN;
        }
    }
    let f = |v: Option<f64>| v.map_or_else(|| "nan".to_string(), |v| format!("{v:.3}"));
    let mut values = vec![
        ("topic".to_string(), c.topic.clone()),
        ("device".into(), c.device.clone()),
        ("model".into(), c.model.clone()),
        ("input_rate_hz".into(), format!("{:.3}", s.input_rate_hz())),
        (
            "output_rate_hz".into(),
            format!("{:.3}", s.output_rate_hz()),
        ),
        ("latency_p50_ms".into(), f(s.latency_p50_ms())),
        ("latency_p95_ms".into(), f(s.latency_p95_ms())),
        ("dropped_in_period".into(), s.dropped.to_string()),
        ("drop_ratio".into(), format!("{:.3}", s.drop_ratio())),
        ("received".into(), c.received_total.to_string()),
        ("processed".into(), c.processed_total.to_string()),
        ("published".into(), c.published_total.to_string()),
        ("dropped".into(), c.dropped_total.to_string()),
        ("decode_errors".into(), c.decode_errors_total.to_string()),
        (
            "inference_errors".into(),
            c.inference_errors_total.to_string(),
        ),
        ("batch_size".into(), c.last_batch_size.to_string()),
    ];
    for (reason, n, msg) in &c.decode_reasons {
        values.push((format!("decode_errors.{reason}"), format!("{n} ({msg})")));
    }
    if let Some(d) = &c.depth {
        values.extend(d.values.iter().cloned());
    }
    if let Some(st) = &c.stability {
        for (scope, stats) in [("window", &st.window), ("run", &st.run)] {
            if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(stats) {
                for (k, v) in m {
                    values.push((format!("stability.{scope}.{k}"), v.to_string()));
                }
            }
        }
    }
    DiagnosticStatus {
        level: lvl,
        name: format!("{}: camera {}", c.node, c.camera),
        message,
        hardware_id: c.device.clone(),
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::params::{DEFAULT_ERROR, DEFAULT_WARN};

    fn params() -> DiagnosticsParams {
        DiagnosticsParams {
            period_s: 1.0,
            stale_timeout_s: 5.0,
            warn: DEFAULT_WARN,
            error: DEFAULT_ERROR,
        }
    }

    fn stats(received: u64, dropped: u64, lat: &[f64]) -> PeriodStats {
        PeriodStats {
            period_s: 1.0,
            received,
            dropped,
            published: received - dropped,
            decode_errors: 0,
            latencies_ms: lat.to_vec(),
            since_last_frame_s: Some(0.1),
            active_for_s: 10.0,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.95), Some(95.0));
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn levels_follow_the_thresholds() {
        let p = params();
        assert_eq!(level(&stats(10, 0, &[100.0]), &p, None).0, OK);
        // warn at drop ratio 0.5, error at 0.95
        assert_eq!(level(&stats(10, 6, &[100.0]), &p, None).0, WARN);
        assert_eq!(level(&stats(100, 96, &[100.0]), &p, None).0, ERROR);
        let (l, m) = level(&stats(10, 0, &[100.0, 3000.0]), &p, None);
        assert_eq!(l, WARN);
        assert!(m.contains("latency p95 3000.0 ms > 2000.0 ms"), "{m}");
        assert_eq!(level(&stats(10, 0, &[20000.0]), &p, None).0, ERROR);
        // 0 frames in the period: below the 0.5 Hz warn rate
        assert_eq!(level(&stats(0, 0, &[]), &p, None).0, WARN);
        let mut s = stats(10, 0, &[]);
        s.since_last_frame_s = Some(6.0);
        assert_eq!(level(&s, &p, None).0, STALE);
        s.since_last_frame_s = None;
        s.active_for_s = 1.0;
        assert_ne!(level(&s, &p, None).0, STALE);
        let mut s = stats(10, 0, &[]);
        s.decode_errors = 2;
        let (l, m) = level(&s, &p, Some("unsupported image encoding `yuv422`"));
        assert_eq!(l, WARN);
        assert!(m.contains("yuv422"), "{m}");
    }
}
