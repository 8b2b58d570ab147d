from pe_core.testing.conformance import BackboneConformance


class TestConformanceLlama(BackboneConformance):
    backbone = "llama"
