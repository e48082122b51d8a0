"""Train (or resume) a run from Python: the command line's workflow as one call.

    python examples/train_from_python.py

Resumes runs/ab5 from its best checkpoint and trains to 200 epochs. Edit the paths first.
"""

from bsrnn import Config, train

if __name__ == "__main__":
    result = train(Config(epochs=200, save_model_dir="runs/ab5", data_dir="/data/vbd",
                          resume_from_checkpoint="runs/ab5", load_checkpoint_type="best"))
    raise SystemExit(result.exit_code)
