//! `memory-plan [--json]`: prints the memory formula's terms and totals for the current
//! settings, one entry per command. Commands size their arena and threads from the same
//! plan, so this is what they will use, not an estimate.

use crate::config::Settings;
use crate::pipeline::plan;

/// The plan as a JSON document.
pub fn json(settings: &Settings) -> serde_json::Value {
    let input = settings.plan_input();
    let commands: serde_json::Map<String, serde_json::Value> = plan::all(&input)
        .into_iter()
        .map(|p| {
            (
                p.command.to_string(),
                serde_json::to_value(&p).unwrap_or_default(),
            )
        })
        .collect();
    serde_json::json!({
        "settings": {
            "compression": settings.encode.method.setting_name(),
            "upload_concurrency": settings.upload_concurrency,
            "download_concurrency": settings.download_concurrency,
            "total_bg_uploaded_limit": settings.bg_uploaded_limit,
            "storage": match &settings.storage {
                crate::config::StorageSettings::File { .. } => "file",
                crate::config::StorageSettings::S3(_) => "s3",
                crate::config::StorageSettings::Azure(_) => "azure",
                crate::config::StorageSettings::Gcs(_) => "gcs",
            },
            "https": input.https,
        },
        "commands": commands,
        "worst_case_decoder_bytes": plan::worst_decoder_bytes(),
    })
}

/// The plan as a table for people.
pub fn text(settings: &Settings) -> String {
    let mut out = String::new();
    for p in plan::all(&settings.plan_input()) {
        out.push_str(&format!(
            "{:<14} peak RSS {:>8.2} MiB  virtual {:>8.2} MiB  threads {:>3}  transfers {:>3}\n",
            p.command,
            p.peak_rss_bytes as f64 / 1048576.0,
            p.peak_virtual_bytes as f64 / 1048576.0,
            p.threads,
            p.transfers
        ));
        for t in &p.components {
            out.push_str(&format!(
                "    {:<26} {:>4} × {:>9} = {:>10} bytes\n",
                t.name, t.count, t.each_bytes, t.bytes
            ));
        }
        out.push_str("  virtual:\n");
        for t in &p.virtual_components {
            out.push_str(&format!(
                "    {:<26} {:>4} × {:>9} = {:>10} bytes\n",
                t.name, t.count, t.each_bytes, t.bytes
            ));
        }
    }
    out
}
