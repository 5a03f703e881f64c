import torch

# Oversubscribed threads make every peer slower on small machines; tests measure values, not speed.
torch.set_num_threads(1)
