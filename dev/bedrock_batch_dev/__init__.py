"""Development tools of the bedrock-batch toolkit: the Bedrock batch emulator, sample data, the demo.

A separate package from ``bedrock_batch`` so that nothing a deployment copies (the plugins folder, the plugins
zip, the wheel, the image) can contain them. Installed for development by ``make install``.
"""
