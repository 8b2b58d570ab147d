from pe_core.testing.conformance import BackboneConformance


class TestConformanceMistral(BackboneConformance):
    backbone = "mistral"
