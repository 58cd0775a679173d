"""Quality metrics: SSIM/PSNR (torchmetrics), OKS/PCK, identity similarity, optional FID/LPIPS."""
