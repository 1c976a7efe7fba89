//! Reports for readers: PNG slice montages with overlays and JSON summaries.
