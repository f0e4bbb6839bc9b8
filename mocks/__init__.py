"""Protocol-typed fakes for tests and local runs: one `Fake<Thing>` per Protocol."""
