"""Analytics: satisfaction indices, composite driver weights, trends and alerts, complaint
terms. Frames (or Parquet files) in, frames out."""
