"""Entry point for `python app.py` and for Hugging Face Spaces (app_file: app.py).

Everything happens under `__main__`: the app's helper processes (playground/bounded.py) import
this file as their main module, and must not start an app, nor pay for importing one."""

if __name__ == "__main__":
    import gc

    # Start-up creates some 600,000 objects that live as long as the app (gradio, torch, transformers,
    # the model); the cyclic collector would rescan them over and over, about a third of the start on
    # this kind of machine. It is paused until the app is built (playground.app.settle_heap).
    gc.disable()

    from adapters.runtime import share_cpu

    share_cpu()  # before torch starts its threads: the app and its workers share the cores

    from playground import gpu

    # On ZeroGPU `spaces` must be imported (and its GPU functions made) before torch is.
    gpu.prepare()

    from playground.app import main

    main()
