"""``preprocessor_config.json`` of real Hub checkpoints, stored offline for the processor-equivalence tests.

The dicts are the files as the Hub serves them (legacy keys such as ``feature_extractor_type``, integer ``size``
and ``reduce_labels`` kept on purpose): the tests load them exactly as ``AutoImageProcessor.from_pretrained``
and ``pipeline()`` would. Checkpoints without a type key resolve their processor through ``config.json``'s
``model_type`` (:data:`MODEL_TYPES`).
"""

from __future__ import annotations

import json
from pathlib import Path

PROCESSOR_CONFIGS = {'google/vit-base-patch16-224': {'do_normalize': True,
                                 'do_resize': True,
                                 'image_mean': [0.5, 0.5, 0.5],
                                 'image_std': [0.5, 0.5, 0.5],
                                 'size': 224},
 'facebook/deit-base-distilled-patch16-224': {'crop_size': 224,
                                              'do_center_crop': True,
                                              'do_normalize': True,
                                              'do_resize': True,
                                              'feature_extractor_type': 'DeiTFeatureExtractor',
                                              'image_mean': [0.485, 0.456, 0.406],
                                              'image_std': [0.229, 0.224, 0.225],
                                              'resample': 3,
                                              'size': 256},
 'microsoft/beit-base-patch16-224': {'crop_size': 224,
                                     'do_center_crop': False,
                                     'do_normalize': True,
                                     'do_resize': True,
                                     'feature_extractor_type': 'BeitFeatureExtractor',
                                     'image_mean': [0.5, 0.5, 0.5],
                                     'image_std': [0.5, 0.5, 0.5],
                                     'reduce_labels': False,
                                     'resample': 2,
                                     'size': 224},
 'facebook/convnext-tiny-224': {'crop_pct': 0.875,
                                'do_normalize': True,
                                'do_resize': True,
                                'feature_extractor_type': 'ConvNextFeatureExtractor',
                                'image_mean': [0.485, 0.456, 0.406],
                                'image_std': [0.229, 0.224, 0.225],
                                'resample': 3,
                                'size': 224},
 'facebook/convnext-base-384': {'crop_pct': 0.875,
                                'do_normalize': True,
                                'do_resize': True,
                                'feature_extractor_type': 'ConvNextFeatureExtractor',
                                'image_mean': [0.485, 0.456, 0.406],
                                'image_std': [0.229, 0.224, 0.225],
                                'resample': 3,
                                'size': 384},
 'microsoft/swin-tiny-patch4-window7-224': {'do_normalize': True,
                                            'do_resize': True,
                                            'feature_extractor_type': 'ViTFeatureExtractor',
                                            'image_mean': [0.485, 0.456, 0.406],
                                            'image_std': [0.229, 0.224, 0.225],
                                            'resample': 3,
                                            'size': 224},
 'microsoft/resnet-50': {'crop_pct': 0.875,
                         'do_normalize': True,
                         'do_resize': True,
                         'feature_extractor_type': 'ConvNextFeatureExtractor',
                         'image_mean': [0.485, 0.456, 0.406],
                         'image_std': [0.229, 0.224, 0.225],
                         'resample': 3,
                         'size': 224},
 'google/mobilenet_v1_1.0_224': {'crop_size': {'height': 224, 'width': 224},
                                 'do_center_crop': True,
                                 'do_normalize': True,
                                 'do_rescale': True,
                                 'do_resize': True,
                                 'image_mean': [0.5, 0.5, 0.5],
                                 'image_processor_type': 'MobileNetV1ImageProcessor',
                                 'image_std': [0.5, 0.5, 0.5],
                                 'resample': 2,
                                 'rescale_factor': 0.00392156862745098,
                                 'size': {'shortest_edge': 256}},
 'google/mobilenet_v2_1.0_224': {'crop_size': {'height': 224, 'width': 224},
                                 'do_center_crop': True,
                                 'do_normalize': True,
                                 'do_rescale': True,
                                 'do_resize': True,
                                 'image_mean': [0.5, 0.5, 0.5],
                                 'image_processor_type': 'MobileNetV2ImageProcessor',
                                 'image_std': [0.5, 0.5, 0.5],
                                 'resample': 2,
                                 'rescale_factor': 0.00392156862745098,
                                 'size': {'shortest_edge': 256}},
 'apple/mobilevit-small': {'crop_size': 256,
                           'do_center_crop': True,
                           'do_flip_channels': True,
                           'do_resize': True,
                           'feature_extractor_type': 'MobileViTFeatureExtractor',
                           'resample': 2,
                           'size': 288},
 'google/efficientnet-b0': {'crop_size': {'height': 289, 'width': 289},
                            'do_center_crop': False,
                            'do_normalize': True,
                            'do_rescale': True,
                            'do_resize': True,
                            'image_mean': [0.485, 0.456, 0.406],
                            'image_processor_type': 'EfficientNetImageProcessor',
                            'image_std': [0.47853944, 0.4732864, 0.47434163],
                            'include_top': True,
                            'resample': 0,
                            'rescale_factor': 0.00392156862745098,
                            'rescale_offset': False,
                            'size': {'height': 224, 'width': 224}},
 'facebook/dinov2-small-imagenet1k-1-layer': {'crop_size': {'height': 224, 'width': 224},
                                              'do_center_crop': True,
                                              'do_convert_rgb': True,
                                              'do_normalize': True,
                                              'do_rescale': True,
                                              'do_resize': True,
                                              'image_mean': [0.485, 0.456, 0.406],
                                              'image_processor_type': 'BitImageProcessor',
                                              'image_std': [0.229, 0.224, 0.225],
                                              'resample': 3,
                                              'rescale_factor': 0.00392156862745098,
                                              'size': {'shortest_edge': 256}},
 'google/siglip-base-patch16-224': {'do_normalize': True,
                                    'do_rescale': True,
                                    'do_resize': True,
                                    'image_mean': [0.5, 0.5, 0.5],
                                    'image_processor_type': 'SiglipImageProcessor',
                                    'image_std': [0.5, 0.5, 0.5],
                                    'processor_class': 'SiglipProcessor',
                                    'resample': 3,
                                    'rescale_factor': 0.00392156862745098,
                                    'size': {'height': 224, 'width': 224}},
 'nvidia/segformer-b0-finetuned-ade-512-512': {'do_normalize': True,
                                               'do_resize': True,
                                               'feature_extractor_type': 'SegformerFeatureExtractor',
                                               'image_mean': [0.485, 0.456, 0.406],
                                               'image_std': [0.229, 0.224, 0.225],
                                               'reduce_labels': True,
                                               'resample': 2,
                                               'size': 512},
 'nvidia/mit-b0': {'do_normalize': True,
                   'do_resize': True,
                   'feature_extractor_type': 'SegformerFeatureExtractor',
                   'image_mean': [0.485, 0.456, 0.406],
                   'image_std': [0.229, 0.224, 0.225],
                   'reduce_labels': False,
                   'resample': 2,
                   'size': 512},
 'google/deeplabv3_mobilenet_v2_1.0_513': {'crop_size': {'height': 513, 'width': 513},
                                           'do_center_crop': True,
                                           'do_normalize': True,
                                           'do_rescale': True,
                                           'do_resize': True,
                                           'image_mean': [0.5, 0.5, 0.5],
                                           'image_processor_type': 'MobileNetV2ImageProcessor',
                                           'image_std': [0.5, 0.5, 0.5],
                                           'resample': 2,
                                           'rescale_factor': 0.00392156862745098,
                                           'size': {'shortest_edge': 545}}}

MODEL_TYPES = {'google/vit-base-patch16-224': 'vit',
 'facebook/deit-base-distilled-patch16-224': 'deit',
 'microsoft/beit-base-patch16-224': 'beit',
 'facebook/convnext-tiny-224': 'convnext',
 'facebook/convnext-base-384': 'convnext',
 'microsoft/swin-tiny-patch4-window7-224': 'swin',
 'microsoft/resnet-50': 'resnet',
 'google/mobilenet_v1_1.0_224': 'mobilenet_v1',
 'google/mobilenet_v2_1.0_224': 'mobilenet_v2',
 'apple/mobilevit-small': 'mobilevit',
 'google/efficientnet-b0': 'efficientnet',
 'facebook/dinov2-small-imagenet1k-1-layer': 'dinov2',
 'google/siglip-base-patch16-224': 'siglip',
 'nvidia/segformer-b0-finetuned-ade-512-512': 'segformer',
 'nvidia/mit-b0': 'segformer',
 'google/deeplabv3_mobilenet_v2_1.0_513': 'mobilenet_v2'}


def write_checkpoint(name: str, folder: Path) -> Path:
    """A folder holding checkpoint ``name``'s ``preprocessor_config.json`` and a minimal ``config.json`` (a timm
    checkpoint's ``config.json`` only)."""
    if name in TIMM_CONFIGS:
        return write_timm_checkpoint(name, folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSOR_CONFIGS[name], indent=2))
    (folder / "config.json").write_text(json.dumps({"model_type": MODEL_TYPES[name]}))
    return folder


TIMM_CONFIGS = {
    'timm/convnext_tiny.in12k_ft_in1k': {
        'architecture': 'convnext_tiny', 'num_classes': 1000,
        'pretrained_cfg': {
            'tag': 'in12k_ft_in1k', 'custom_load': False, 'input_size': [3, 224, 224],
            'test_input_size': [3, 288, 288], 'fixed_input_size': False, 'interpolation': 'bicubic',
            'crop_pct': 0.95, 'test_crop_pct': 1.0, 'crop_mode': 'center', 'mean': [0.485, 0.456, 0.406],
            'std': [0.229, 0.224, 0.225], 'num_classes': 1000, 'pool_size': [7, 7], 'first_conv': 'stem.0',
            'classifier': 'head.fc',
        },
    },
    'timm/convnext_tiny.in12k_ft_in1k_384': {
        'architecture': 'convnext_tiny', 'num_classes': 1000,
        'pretrained_cfg': {
            'tag': 'in12k_ft_in1k_384', 'custom_load': False, 'input_size': [3, 384, 384], 'fixed_input_size': False,
            'interpolation': 'bicubic', 'crop_pct': 1.0, 'crop_mode': 'squash', 'mean': [0.485, 0.456, 0.406],
            'std': [0.229, 0.224, 0.225], 'num_classes': 1000, 'pool_size': [12, 12], 'first_conv': 'stem.0',
            'classifier': 'head.fc',
        },
    },
    'timm/mobilenetv2_100.ra_in1k': {
        'architecture': 'mobilenetv2_100', 'num_classes': 1000,
        'pretrained_cfg': {
            'tag': 'ra_in1k', 'custom_load': False, 'input_size': [3, 224, 224], 'fixed_input_size': False,
            'interpolation': 'bicubic', 'crop_pct': 0.875, 'crop_mode': 'center', 'mean': [0.485, 0.456, 0.406],
            'std': [0.229, 0.224, 0.225], 'num_classes': 1000, 'pool_size': [7, 7], 'first_conv': 'conv_stem',
            'classifier': 'classifier',
        },
    },
    'timm/cspresnet50.ra_in1k': {
        'architecture': 'cspresnet50', 'num_classes': 1000,
        'pretrained_cfg': {
            'tag': 'ra_in1k', 'custom_load': False, 'input_size': [3, 256, 256], 'fixed_input_size': False,
            'interpolation': 'bilinear', 'crop_pct': 0.887, 'crop_mode': 'center', 'mean': [0.485, 0.456, 0.406],
            'std': [0.229, 0.224, 0.225], 'num_classes': 1000, 'pool_size': [8, 8], 'first_conv': 'stem.conv1.conv',
            'classifier': 'head.fc',
        },
    },
    'timm/vit_base_patch16_clip_224.openai_ft_in12k_in1k': {
        'architecture': 'vit_base_patch16_clip_224', 'num_classes': 1000,
        'pretrained_cfg': {
            'tag': 'openai_ft_in12k_in1k', 'custom_load': False, 'input_size': [3, 224, 224],
            'fixed_input_size': True, 'interpolation': 'bicubic', 'crop_pct': 0.95, 'crop_mode': 'center',
            'mean': [0.48145466, 0.4578275, 0.40821073], 'std': [0.26862954, 0.26130258, 0.27577711],
            'num_classes': 1000, 'pool_size': None, 'first_conv': 'patch_embed.proj', 'classifier': 'head',
        },
    },
    'timm/vit_base_patch16_224.augreg2_in21k_ft_in1k': {
        'architecture': 'vit_base_patch16_224', 'num_classes': 1000,
        'pretrained_cfg': {
            'tag': 'augreg2_in21k_ft_in1k', 'custom_load': False, 'input_size': [3, 224, 224],
            'fixed_input_size': True, 'interpolation': 'bicubic', 'crop_pct': 0.9, 'crop_mode': 'center',
            'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5], 'num_classes': 1000, 'pool_size': None,
            'first_conv': 'patch_embed.proj', 'classifier': 'head',
        },
    },
    'timm/dpn68.mx_in1k': {
        'architecture': 'dpn68', 'num_classes': 1000,
        'pretrained_cfg': {
            'tag': 'mx_in1k', 'custom_load': False, 'input_size': [3, 224, 224], 'fixed_input_size': False,
            'interpolation': 'bicubic', 'crop_pct': 0.875, 'crop_mode': 'center',
            'mean': [0.48627450980392156, 0.4588235294117647, 0.40784313725490196],
            'std': [0.23482446870963955, 0.23482446870963955, 0.23482446870963955], 'num_classes': 1000,
            'pool_size': [7, 7], 'first_conv': 'features.conv1_1.conv', 'classifier': 'classifier',
        },
    },
    'timm/deepseek_vit_412m.deepseek_v4_1_flash': {
        'architecture': 'deepseek_vit_412m', 'num_classes': 0,
        'pretrained_cfg': {
            'tag': 'deepseek_v4_1_flash', 'custom_load': False, 'input_size': [3, 546, 546],
            'min_input_size': [3, 126, 126], 'fixed_input_size': False, 'interpolation': 'bicubic', 'crop_pct': 1.0,
            'crop_mode': 'border', 'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5], 'num_classes': 0,
            'pool_size': None, 'first_conv': 'encoder.patch_embed.proj', 'classifier': 'head',
        },
    },
    'timm/vit_base_patch16_sapiens2.fb': {
        'architecture': 'vit_base_patch16_sapiens2', 'num_classes': 0,
        'pretrained_cfg': {
            'tag': 'fb', 'custom_load': False, 'input_size': [3, 1024, 768], 'min_input_size': [3, 256, 192],
            'fixed_input_size': False, 'interpolation': 'bilinear', 'crop_pct': 1.0, 'crop_mode': 'squash',
            'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225], 'num_classes': 0, 'pool_size': None,
            'first_conv': 'patch_embed.proj', 'classifier': 'head',
        },
    },
    'timm/resnet50.a1_in1k (edited: crop_mode border, crop_pct 0.9)': {
        'architecture': 'resnet50', 'num_classes': 1000,
        'pretrained_cfg': {
            'tag': 'a1_in1k', 'custom_load': False, 'input_size': [3, 224, 224], 'test_input_size': [3, 288, 288],
            'fixed_input_size': False, 'interpolation': 'bicubic', 'crop_pct': 0.9, 'test_crop_pct': 1.0,
            'crop_mode': 'border', 'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225], 'num_classes': 1000,
            'pool_size': [7, 7], 'first_conv': 'conv1', 'classifier': 'fc',
        },
    },
    'timm/vit_base_patch16_sapiens2.fb (edited: crop_mode center)': {
        'architecture': 'vit_base_patch16_sapiens2', 'num_classes': 0,
        'pretrained_cfg': {
            'tag': 'fb', 'custom_load': False, 'input_size': [3, 1024, 768], 'min_input_size': [3, 256, 192],
            'fixed_input_size': False, 'interpolation': 'bilinear', 'crop_pct': 0.95, 'crop_mode': 'center',
            'mean': [0.485, 0.456, 0.406], 'std': [0.229, 0.224, 0.225], 'num_classes': 0, 'pool_size': None,
            'first_conv': 'patch_embed.proj', 'classifier': 'head',
        },
    },
}
"""``config.json`` of timm checkpoints on the Hub (``timm/<name>``: transformers' ``timm_wrapper``, whose image
processor is timm's own evaluation transform built from ``pretrained_cfg``), as timm's ``push_to_hf_hub`` writes them
(timm 1.0.31's registry: ``filter_pretrained_cfg(get_pretrained_cfg(name).to_dict(), remove_source=True,
remove_null=True)``, ``architecture`` and ``num_classes`` at the top; the informational ``license``, ``origin_url``
and ``paper_ids`` left out). They cover ``crop_mode`` center, squash and
border, bicubic and bilinear, ImageNet, CLIP, 0.5 and MXNet (``dpn68``) statistics, 224 to 1024 px and a non-square
input. Two ``(edited: …)`` entries change one key of a real config to reach timm's remaining code paths: border with a
crop (``crop_pct`` < 1) and centre crop to a non-square size (``ResizeKeepRatio``)."""


def write_timm_checkpoint(name: str, folder: Path) -> Path:
    """A folder holding timm checkpoint ``name``'s ``config.json`` (its processor lives in ``pretrained_cfg``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TIMM_CONFIGS[name], indent=2))
    return folder
