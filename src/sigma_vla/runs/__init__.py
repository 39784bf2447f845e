"""What a run directory holds on disk and how its policy.json is written and read (the names: sigma_vla.layout)."""
