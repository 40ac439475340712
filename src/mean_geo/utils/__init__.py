"""The ground floor: helpers every layer may use (they import nothing of mean_geo but errors)."""
