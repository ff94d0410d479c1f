"""Images in and out: the strict benchmark reader and writer (``images``), the production reader of user files
(``user_images``), and the Y-PSNR/SSIM metrics."""
