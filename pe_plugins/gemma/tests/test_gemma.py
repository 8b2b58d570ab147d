from pe_core.testing.conformance import BackboneConformance


class TestConformanceGemma(BackboneConformance):
    backbone = "gemma"
