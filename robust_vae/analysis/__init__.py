"""Analysis across runs: group comparisons with intervals, and studies made of many runs."""
