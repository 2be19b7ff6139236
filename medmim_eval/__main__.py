from medmim_eval.cli import entry

if __name__ == "__main__":
    entry()
