from pe_core.testing.conformance import BackboneConformance


class TestConformanceQwen(BackboneConformance):
    backbone = "qwen"
