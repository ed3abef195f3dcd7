"""Binary ResNet-18 and AlexNet (Section 5.1.1)."""
