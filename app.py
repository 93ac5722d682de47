"""Entry point for `python app.py` and for Hugging Face Spaces (app_file: app.py)."""

from playground.app import main

if __name__ == "__main__":
    main()
