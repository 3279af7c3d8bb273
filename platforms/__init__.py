"""Board platforms, device capacities and the open-synthesis flow."""
