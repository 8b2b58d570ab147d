"""Testing helpers for pe and its plugins: tiny random models of any registered family
(:mod:`pe_core.testing.tiny`) and the conformance suite every backbone plugin runs on
itself (:class:`pe_core.testing.conformance.BackboneConformance`)."""
