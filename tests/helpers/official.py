"""Our backbone keys -> FAIR's ConvNeXt layout under ``model_1.convnext.`` (the authors' MEAN, DAC
and CAMP checkpoints), written independently of the loader's table (which uses timm's remapping)."""

FAIR_BACKBONE = [
    (r"^backbone\.net\.stem\.(\d)\.", r"model_1.convnext.downsample_layers.0.\1."),
    (r"^backbone\.net\.stages\.(\d)\.downsample\.(\d)\.", r"model_1.convnext.downsample_layers.\1.\2."),
    (r"^backbone\.net\.stages\.(\d)\.blocks\.(\d+)\.conv_dw\.", r"model_1.convnext.stages.\1.\2.dwconv."),
    (r"^backbone\.net\.stages\.(\d)\.blocks\.(\d+)\.mlp\.fc(\d)\.", r"model_1.convnext.stages.\1.\2.pwconv\3."),
    (r"^backbone\.net\.stages\.(\d)\.blocks\.(\d+)\.", r"model_1.convnext.stages.\1.\2."),
    (r"^backbone\.net\.head\.norm\.", r"model_1.convnext.norm."),
]
