"""Customer analytics: RFM, lifecycle stages, preferences, predictions (CLV), dashboards."""
