"""Text: normalisation, language detection, jieba segmentation and the theme lexicon."""
