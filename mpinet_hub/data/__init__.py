"""Dataset readers (Potsdam, LoveDA, UAVid, unlabeled imagery), synthetic look-alikes and checks."""
