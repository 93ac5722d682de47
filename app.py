"""Entry point for `python app.py` and for Hugging Face Spaces (app_file: app.py)."""

from playground import gpu

# On ZeroGPU `spaces` must be imported (and its GPU functions made) before torch is.
gpu.prepare()

from playground.app import main  # noqa: E402

if __name__ == "__main__":
    main()
